"""A seccomp filter for the jail, compiled with the system's libseccomp.

The jail's network namespace and its mount namespace (no host socket files bound) already keep
package code away from every socket of the host; this filter is defence in depth. It is built
with libseccomp (the library behind ``python3-seccomp`` and ``pyseccomp``), called through
:mod:`ctypes` so that no new Python dependency is needed, and exported as the BPF program that
``bwrap --seccomp FD`` loads just before it runs the jailed command.

Denied (everything else is allowed):

- ``socket()`` of every address family: ``AF_INET``/``AF_INET6`` fail with ENETUNREACH
  ("Network is unreachable", what code written for offline hosts already handles), every other
  family (``AF_UNIX``, ``AF_NETLINK``, ``AF_PACKET``, ``AF_VSOCK``, ...) with EACCES.
  ``socketpair()`` stays allowed: it only joins two ends inside the jail.
- ``io_uring_*`` (io_uring can open sockets without the ``socket()`` system call): ENOSYS.
- new namespaces: ``unshare``, ``setns``, ``clone`` with ``CLONE_NEWUSER``: EPERM; ``clone3``
  (whose flags a filter cannot read): ENOSYS, so C libraries fall back to ``clone``.
- mounting and kernel interfaces a model never needs: ``mount`` and friends, ``bpf``,
  ``perf_event_open``, ``userfaultfd``, the kernel keyring: EPERM.

System calls of a foreign architecture (x32, i386 through ``int 0x80``) kill the process:
libseccomp's default for an architecture the filter does not name.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
from functools import lru_cache

_ACT_ALLOW = 0x7FFF0000
_CMP_EQ = 4
_CMP_MASKED_EQ = 7
_CLONE_NEWUSER = 0x10000000

#: Highest address family number we deny explicitly (AF_MAX is 46 on Linux 6.x; the kernel
#: itself refuses higher ones with EAFNOSUPPORT).
_MAX_FAMILY = 63

_DENY_EPERM = (
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
)
_DENY_ENOSYS = ("io_uring_setup", "io_uring_enter", "io_uring_register", "clone3")

#: What the isolation report says when the filter is in force.
DESCRIPTION = "sockets, io_uring and new namespaces denied"


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0x0000FFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def _add(lib: ctypes.CDLL, ctx: int, action: int, name: str, *cmps: tuple[int, int, int, int]):
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:  # not a system call on this architecture
        return
    arr = (_ArgCmp * max(1, len(cmps)))(*[_ArgCmp(*c) for c in cmps])
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
    if rc < 0:
        raise OSError(-rc, f"seccomp_rule_add({name}) failed: {os.strerror(-rc)}")


@lru_cache(maxsize=1)
def compile_filter() -> tuple[bytes | None, str]:
    """The BPF program (``None`` where libseccomp is missing) and a note for the report."""
    try:
        lib = _libseccomp()
    except OSError as exc:
        return None, f"seccomp: unavailable (libseccomp not found: {exc})"
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        return None, "seccomp: unavailable (seccomp_init failed)"
    try:
        ip_families = {socket.AF_INET, socket.AF_INET6}
        for family in range(_MAX_FAMILY + 1):
            code = errno.ENETUNREACH if family in ip_families else errno.EACCES
            _add(lib, ctx, _act_errno(code), "socket", (0, _CMP_EQ, family, 0))
        for name in _DENY_EPERM:
            _add(lib, ctx, _act_errno(errno.EPERM), name)
        for name in _DENY_ENOSYS:
            _add(lib, ctx, _act_errno(errno.ENOSYS), name)
        _add(
            lib,
            ctx,
            _act_errno(errno.EPERM),
            "clone",
            (0, _CMP_MASKED_EQ, _CLONE_NEWUSER, _CLONE_NEWUSER),
        )
        fd = os.memfd_create("learndock-seccomp", 0)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                return None, f"seccomp: unavailable (export failed: {os.strerror(-rc)})"
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        return None, f"seccomp: unavailable ({exc})"
    finally:
        lib.seccomp_release(ctx)
    program = b"".join(chunks)
    if not program or len(program) % 8:
        return None, "seccomp: unavailable (libseccomp produced no program)"
    return program, f"seccomp: {DESCRIPTION}"


def program_fd(program: bytes) -> int:
    """A fresh file descriptor holding ``program`` from offset 0 (for ``bwrap --seccomp``)."""
    fd = os.memfd_create("learndock-seccomp", 0)
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
