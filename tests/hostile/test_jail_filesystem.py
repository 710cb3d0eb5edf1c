"""Hostile packages against the jail's file system: writes outside the scratch dir, reads of
host secrets, and what reaches the check report."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

import pytest

from hostile.jail_packages import dock_home, hostile_package, open_runtime, results
from learndock.errors import SandboxError
from learndock.package import check_package

__all__ = ["dock_home"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_writes_outside_the_scratch_dir_fail(tmp_path, dock_home, gauss_spec):
    blob = dock_home / "blobs" / "ab" / "abcdef.blob"
    blob.parent.mkdir()
    blob.write_bytes(b"the real blob")
    outside = tmp_path / "sentinel.txt"
    outside.write_text("untouched")
    home_before = _tree(dock_home)
    attacks = f"""
    attempt("overwrite blob", lambda: write({str(blob)!r}, "pwned"))
    attempt("new file in blobs", lambda: write({str(dock_home / "blobs" / "new.blob")!r}, "x"))
    attempt("mkdir in home", lambda: os.mkdir({str(dock_home / "evil")!r}))
    attempt("overwrite sentinel", lambda: write({str(outside)!r}, "pwned"))
    attempt("write into the package", lambda: write("/pkg/model.py", "pwned"))
    attempt("write next to the module", lambda: write(os.path.join(os.path.dirname(__file__),
                                                                  "x.py"), "pwned"))
    attempt("write /usr", lambda: write("/usr/lib/evil", "x"))
    attempt("write the interpreter", lambda: write(sys.executable, "x"))
    attempt("write /etc/passwd", lambda: write("/etc/passwd", "x"))
    attempt("write the scratch dir", lambda: write(os.path.join(os.environ["HOME"], "ok"), "ok"))
    """
    pkg = hostile_package(tmp_path / "pkg", gauss_spec, attacks,
                          predict='attempt("predict: overwrite blob", '
                                  f'lambda: write({str(blob)!r}, "pwned"))')
    pkg_before = _tree(pkg)
    rt = open_runtime(pkg)
    try:
        assert rt.predict(gauss_spec.herd(3, random_state=0)).shape == (3,)
        res = results(rt)
    finally:
        rt.close()
    assert res.pop("write the scratch dir")[0] == "ok"  # control: the harness can see success
    assert len(res) == 10
    for name, (outcome, detail) in res.items():
        assert outcome == "failed", (name, detail)
    assert "Read-only file system" in res["write into the package"][1]
    assert blob.read_bytes() == b"the real blob"
    assert outside.read_text() == "untouched"
    assert _tree(dock_home) == home_before
    assert not (dock_home / "evil").exists()
    assert _tree(pkg) == pkg_before


def test_host_secrets_cannot_be_read_nor_reach_the_report(tmp_path, dock_home, gauss_spec):
    token = secrets.token_hex(16)
    secret = dock_home / "secret.txt"
    secret.write_text(f"SECRET-{token}")
    shadow = Path("/etc/shadow")
    assert shadow.exists() and "root:" in shadow.read_text()  # the host does have secrets
    attacks = f"""
    leaked, errors = [], []
    for p in ({str(secret)!r}, "/etc/shadow", "/proc/1/environ", {str(tmp_path)!r}):
        try:
            leaked.append(read(p) if not os.path.isdir(p) else str(os.listdir(p)))
        except OSError as exc:
            errors.append(f"{{p}}: {{type(exc).__name__}}")
    own = read(__file__)[:20]  # control: reading the package itself works
    raise RuntimeError(f"LEAK[{{'|'.join(leaked)}}] ERRORS[{{', '.join(errors)}}] OWN[{{own!r}}]")
    """
    pkg = hostile_package(tmp_path / "pkg", gauss_spec, attacks)
    report = check_package(pkg, sandbox=True)
    assert not report.ok
    text = report.text() + json.dumps(report.to_dict())
    assert token not in text
    assert "root:" not in text
    runs = {i.name: i for i in report.items}["model runs"]
    assert f"{secret}: FileNotFoundError" in runs.message
    assert "/etc/shadow: FileNotFoundError" in runs.message
    assert f"{tmp_path}: FileNotFoundError" in runs.message
    assert "OWN['\\nimport json" in runs.message  # the package's own files are readable
    assert runs.message.startswith("predict on")
    iso = {i.name: i for i in report.items}["isolation"]
    assert iso.ok and iso.message.startswith("bubblewrap")


def test_report_text_from_the_worker_is_bounded_and_sanitised(tmp_path, dock_home, gauss_spec):
    attacks = r"""
    raise RuntimeError("\x1b[31mred\x1b[0m\r\nFAKE: [ok] model runs\u202e" + "A" * 20000)
    """
    pkg = hostile_package(tmp_path / "pkg", gauss_spec, attacks)
    report = check_package(pkg, sandbox=True)
    msg = {i.name: i for i in report.items}["model runs"].message
    assert not report.ok
    assert len(msg) < 700
    assert msg.isprintable() and "\x1b" not in msg and "\u202e" not in msg
    assert "\n" not in msg and "truncated" in msg
    assert "[31mred" in msg  # what is printable is kept


def test_package_symlinks_and_special_files_are_refused(tmp_path, dock_home, gauss_spec):
    pkg = hostile_package(tmp_path / "pkg", gauss_spec)
    (pkg / "shadow").symlink_to("/etc/shadow")
    with pytest.raises(SandboxError, match="symbolic link"):
        open_runtime(pkg)
