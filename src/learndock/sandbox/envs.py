"""Python environments for ``python``-format packages (``requirements.pip`` in the manifest).

Rules:

- a requirement is a name with optional extras, version specifiers and environment markers
  (``numpy>=1.26``, ``six==1.16.0``, ``tomli; python_version < "3.11"``): no URLs, VCS
  references, local paths, ``-r``/``--index-url`` option lines;
- requirements the dock's own environment already satisfies need no environment: the package
  runs on the dock's interpreter environment, bound read-only into the jail;
- otherwise an environment is built *outside* the jail, from wheels only
  (``pip install --only-binary :all:``: installing a wheel copies files and runs no code from
  it), on top of the dock's interpreter and packages (a ``.pth`` file adds the dock's
  site-packages after the environment's own, so its pins win). It is cached under
  ``<home>/envs/<sha256 of the sorted requirements and the interpreter>`` and only ever run
  inside the jail, bound read-only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import uuid
import venv
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from learndock.errors import SandboxError
from learndock.sandbox.protocol import sanitize

MAX_REQUIREMENTS = 64
MAX_REQUIREMENT_CHARS = 200
#: Seconds one environment build may take (pip resolving and unpacking wheels).
BUILD_TIMEOUT_S = 900
_COMPLETE = ".learndock-env.json"


def parse_requirements(lines: list[str]) -> list[Requirement]:
    """Validate requirement strings; returns ``packaging`` Requirement objects.

    Raises :class:`SandboxError` naming the first line that is not a plain name + specifier.
    """
    if len(lines) > MAX_REQUIREMENTS:
        raise SandboxError(f"too many requirements ({len(lines)} > {MAX_REQUIREMENTS})")
    reqs = []
    for raw in lines:
        line = str(raw).strip()
        shown = sanitize(line, 80)
        if not line:
            continue
        if len(line) > MAX_REQUIREMENT_CHARS:
            raise SandboxError(f"requirement {shown!r} is longer than {MAX_REQUIREMENT_CHARS} "
                               "characters")
        if line.startswith("-"):
            raise SandboxError(f"requirement {shown!r}: pip options are not allowed")
        if re.search(r"://|^[./~]|\\|\bfile:|\bgit\+", line):
            raise SandboxError(f"requirement {shown!r}: URLs and paths are not allowed; name "
                               "a package with a version specifier")
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise SandboxError(f"requirement {shown!r} is not a name with version "
                               f"specifiers: {sanitize(str(exc), 200)}") from None
        if req.url:
            raise SandboxError(f"requirement {shown!r}: direct references (name @ URL) are "
                               "not allowed")
        reqs.append(req)
    return reqs


def check_python(spec: str) -> None:
    """Refuse a package whose ``requirements.python`` excludes this interpreter."""
    try:
        wanted = SpecifierSet(spec)
    except InvalidSpecifier:
        raise SandboxError(f"requirements.python {sanitize(spec, 80)!r} is not a version "
                           "specifier") from None
    here = ".".join(map(str, sys.version_info[:3]))
    if not wanted.contains(here, prereleases=True):
        raise SandboxError(f"the package needs Python {sanitize(spec, 80)}; the dock runs "
                           f"Python {here}")


def satisfied_by_dock(reqs: list[Requirement]) -> bool:
    """True when the dock's own environment has every requirement (markers evaluated)."""
    for req in reqs:
        if req.marker is not None and not req.marker.evaluate():
            continue
        if req.extras:
            return False  # cannot tell whether the extras' dependencies are there
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            return False
        if not req.specifier.contains(version, prereleases=True):
            return False
    return True


def requirements_key(reqs: list[Requirement]) -> str:
    lines = sorted({str(r) for r in reqs})
    lines.append(f"python {sys.implementation.cache_tag} {sys.base_prefix}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def dock_site_dirs() -> list[str]:
    dirs = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def environment_for(pip: list[str], home: Path) -> Path | None:
    """The environment to run a package with these requirements: ``None`` for the dock's own
    environment, else a cached (built on first use) environment directory under ``home``."""
    reqs = parse_requirements(pip)
    if not reqs or satisfied_by_dock(reqs):
        return None
    envs = Path(home) / "envs"
    envs.mkdir(parents=True, exist_ok=True)
    key = requirements_key(reqs)
    target = envs / key
    if (target / _COMPLETE).is_file():
        return target
    with open(envs / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / _COMPLETE).is_file():
            return target
        if target.exists():  # a half-built leftover
            shutil.rmtree(target, ignore_errors=True)
        _build(reqs, target)
    return target


def env_python(env: Path) -> Path:
    return env / "bin" / "python"


def _build(reqs: list[Requirement], target: Path) -> None:
    tmp = target.parent / f".build-{target.name[:16]}-{uuid.uuid4().hex[:8]}"
    try:
        venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=True).create(tmp)
        purelib = _env_purelib(tmp)
        purelib.mkdir(parents=True, exist_ok=True)
        # The dock's packages (numpy, ...) after the environment's own, .pth files processed.
        lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in dock_site_dirs())
        (purelib / "_learndock_dock_site.pth").write_text(lines)
        cmd = [
            sys.executable, "-m", "pip", "--python", str(tmp / "bin" / "python"),
            "install", "--only-binary", ":all:", "--no-input", "--disable-pip-version-check",
            "--no-warn-script-location", "--no-cache-dir", *[str(r) for r in reqs],
        ]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise SandboxError(f"installing the requirements took more than {BUILD_TIMEOUT_S} "
                               "s") from None
        if res.returncode != 0:
            tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-4:])
            raise SandboxError("the package's requirements could not be installed from wheels "
                               f"(pip --only-binary :all:): {sanitize(tail, 500)}")
        (tmp / _COMPLETE).write_text(json.dumps({"requirements": sorted(map(str, reqs))}))
        for dirpath, dirnames, filenames in os.walk(tmp):
            for n in dirnames + filenames:
                p = os.path.join(dirpath, n)
                with contextlib.suppress(OSError):
                    if not os.path.islink(p):
                        os.chmod(p, os.stat(p).st_mode | 0o444 | (0o111 if n in dirnames else 0))
        os.chmod(tmp, 0o755)
        os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _env_purelib(env: Path) -> Path:
    v = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return env / "lib" / v / "site-packages"
