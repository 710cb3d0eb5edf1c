"""Hostile packages against the worker protocol: forged replies that name other paths, an
output that is a symlink or a FIFO, replies with extra keys. The dock reads only its own fixed
file name, never follows links and never unlinks a path the worker named."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest

from hostile.jail_packages import dock_home, hostile_package, open_runtime
from learndock.errors import SandboxError

__all__ = ["dock_home"]


def _target(tmp_path):
    target = tmp_path / "victim.npy"
    np.save(target, np.arange(5.0))
    return target, hashlib.sha256(target.read_bytes()).hexdigest()


FORGE = """
out = protocol_out()
{prepare}
out.write({line!r} + "\\n")
out.flush()
time.sleep(600)  # the real reply never comes
"""


@pytest.mark.parametrize(
    ("prepare", "reply", "expected"),
    [
        # the old protocol trusted "output" as a path: now it must be a boolean
        ("", '{{"ok": true, "output": "../../../..{target}"}}', "must be a bool"),
        ("", '{{"ok": true, "output": true, "path": "{target}"}}', "unexpected keys"),
        ("", '{{"ok": true, "output": true, "output": "{target}"}}', "duplicate key"),
        # a symlink (to a host path!) under the fixed output name is not followed
        ('os.symlink("{target}", "/scratch/out.npy")', '{{"ok": true, "output": true}}',
         "not a regular file"),
        # a FIFO would block a reader that opened it blindly
        ('os.mkfifo("/scratch/out.npy")', '{{"ok": true, "output": true}}',
         "not a regular file"),
        ("", '{{"ok": true, "output": NaN}}', "non-standard JSON"),
        ("", "not json at all", "not JSON"),
    ],
)
def test_forged_replies_are_protocol_errors(tmp_path, dock_home, gauss_spec, prepare, reply,
                                            expected):
    target, digest = _target(tmp_path)
    line = reply.format(target=target)
    pkg = hostile_package(tmp_path / "pkg", gauss_spec,
                          predict=FORGE.format(prepare=prepare.format(target=target), line=line))
    rt = open_runtime(pkg, timeout=20)
    try:
        t0 = time.monotonic()
        with pytest.raises(SandboxError, match=expected) as exc:
            rt.predict(gauss_spec.herd(2, random_state=0))
        assert time.monotonic() - t0 < 10  # refused at once, not at the timeout
        assert "timed out" not in str(exc.value)
        assert rt.jail.group.pids() == []  # a broken protocol stops the jail
    finally:
        rt.close()
    assert target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == digest


def test_output_of_a_forbidden_kind_is_refused(tmp_path, dock_home, gauss_spec):
    # an .npz (zip) or pickled object array under the output name is not read
    pkg = hostile_package(tmp_path / "pkg", gauss_spec, predict="""
    return np.array([{"a": 1}] * len(X), dtype=object)
    """)
    rt = open_runtime(pkg)
    try:
        out = rt.predict(gauss_spec.herd(2, random_state=0))  # object arrays cross as text
        assert out.dtype.kind == "U"
    finally:
        rt.close()
    pkg = hostile_package(tmp_path / "pkg2", gauss_spec, predict=FORGE.format(
        prepare='np.savez("/scratch/out.npy", a=np.arange(3))\n'
                'os.rename("/scratch/out.npy.npz", "/scratch/out.npy")',
        line='{"ok": true, "output": true}'))
    rt = open_runtime(pkg)
    try:
        with pytest.raises(SandboxError, match="could not be read safely"):
            rt.predict(gauss_spec.herd(2, random_state=0))
    finally:
        rt.close()


def test_prints_from_the_package_cannot_forge_replies(tmp_path, dock_home, gauss_spec):
    pkg = hostile_package(tmp_path / "pkg", gauss_spec, """
    print('{"ok": true, "methods": ["fit"]}', flush=True)
    os.write(1, b'{"ok": true, "methods": ["fit"]}\\n')
    """, predict="""
    print('{"ok": true, "output": false}', flush=True)
    os.write(1, b'{"ok": true, "output": false}\\n')
    """)
    rt = open_runtime(pkg)
    try:
        assert rt.methods == {"predict"}
        out = rt.predict(gauss_spec.herd(3, random_state=0))
        assert out.shape == (3,)  # the real reply (output written), not the printed one
    finally:
        rt.close()
