"""Hostile packages against the jail's network isolation: Unix sockets of the host
(PostgreSQL's and one of the test's own) and TCP to the host's loopback."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

from hostile.jail_packages import dock_home, hostile_package, open_runtime, results
from learndock.sandbox import jail_support

__all__ = ["dock_home"]

PG_SOCKET = "/var/run/postgresql/.s.PGSQL.5432"


class _Listener:
    """A listening socket that counts the connections it accepts."""

    def __init__(self, family: int, address: object) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.accepted = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            with contextlib.suppress(OSError):
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def _host_can_connect_unix(path: str) -> bool:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(path)
        s.close()
        return True
    except OSError:
        return False


def test_no_unix_or_tcp_socket_of_the_host_is_reachable(tmp_path, dock_home, gauss_spec):
    unix_path = str(tmp_path / "dock.sock")
    unix = _Listener(socket.AF_UNIX, unix_path)
    tcp = _Listener(socket.AF_INET, ("127.0.0.1", 0))
    tcp_port = tcp.sock.getsockname()[1]
    try:
        # controls: from the host, both listeners answer (and PostgreSQL's socket, if running)
        assert _host_can_connect_unix(unix_path)
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=2):
            pass
        pg_up = Path(PG_SOCKET).exists() and _host_can_connect_unix(PG_SOCKET)
        deadline = time.monotonic() + 10  # the listeners count in their own threads
        while (unix.accepted, tcp.accepted) < (1, 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        base = unix.accepted, tcp.accepted
        assert base == (1, 1)  # control: both host connections were seen
        attacks = f"""
        attempt("postgres unix socket", lambda: connect_unix({PG_SOCKET!r}))
        attempt("test unix socket", lambda: connect_unix({unix_path!r}))
        attempt("abstract unix socket", lambda: connect_unix("\\0learndock-test"))
        attempt("postgres tcp", lambda: connect_tcp("127.0.0.1", 5432))
        attempt("test tcp", lambda: connect_tcp("127.0.0.1", {tcp_port}))
        attempt("outside tcp", lambda: connect_tcp("10.255.255.1", 80))
        attempt("ipv6 loopback", lambda: connect_tcp("::1", 5432))
        attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
            b"x", ("127.0.0.1", 53)))
        attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))
        attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
        attempt("socketpair", lambda: len(socket.socketpair()))
        """
        pkg = hostile_package(tmp_path / "pkg", gauss_spec, attacks,
                              predict='attempt("predict: test tcp", '
                                      f'lambda: connect_tcp("127.0.0.1", {tcp_port}))')
        rt = open_runtime(pkg)
        try:
            rt.predict(gauss_spec.herd(2, random_state=0))
            res = results(rt)
        finally:
            rt.close()
    finally:
        unix.close()
        tcp.close()
    assert res.pop("socketpair") == ["ok", "2"]  # control: the harness sees successes
    assert len(res) == 11
    for name, (outcome, detail) in res.items():
        assert outcome == "failed", (name, detail)
    assert (unix.accepted, tcp.accepted) == base
    # seccomp denies socket creation itself (the network namespace alone would let a socket be
    # made and fail later): defence in depth is in force
    if jail_support().seccomp_program is not None:
        assert "PermissionError" in res["test unix socket"][1]
        assert "Network is unreachable" in res["test tcp"][1]
    assert pg_up or not Path(PG_SOCKET).exists()
