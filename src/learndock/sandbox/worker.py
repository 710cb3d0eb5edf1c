"""Child side of the sandbox: load the model class, answer calls over stdin/stdout (JSON lines).

Runs as ``python -I -B -m learndock.sandbox.worker --pkg DIR --in DIR --scratch DIR [...]``:
inside the jail as ``/pkg`` (read-only), ``/in`` (read-only, the dock's inputs) and
``/scratch`` (the only writable place); with the operator's opt-out, as host paths.

It imports as little as possible (numpy and the standard library; never the rest of learndock)
and applies its limits before any package code is imported. The package's modules are
compiled from their ``.py`` sources only: ``__pycache__`` directories and ``.pyc`` files in the
package are never read, so bytecode cannot run in place of the source that was shipped.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import traceback
import uuid

from learndock.sandbox.protocol import INPUT_NAME, METHODS, OUTPUT_NAME


def _apply_limits(cpu_s: int, as_mb: int, fsize_mb: int) -> None:
    import resource

    limits = [(resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_CORE, 0)]
    if as_mb > 0:  # only without the jail: its cgroup bounds the memory of the whole tree
        limits.append((resource.RLIMIT_AS, as_mb * 1024 * 1024))
    if fsize_mb > 0:
        limits.append((resource.RLIMIT_FSIZE, fsize_mb * 1024 * 1024))
    for res, value in limits:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(res, (value, value))


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles the module from its source every time: no bytecode is read or written."""

    def get_code(self, fullname: str):  # type: ignore[override]
        return self.source_to_code(self.get_data(self.path), self.path)

    def set_data(self, path: str, data: bytes, *, _mode: int = 0o666) -> None:
        return None


def _install_source_only_imports(root: str) -> None:
    """Modules under ``root`` are found as ``.py`` files only (no ``.pyc``, no extensions)."""
    make_finder = importlib.machinery.FileFinder.path_hook(
        (_SourceOnlyLoader, importlib.machinery.SOURCE_SUFFIXES)
    )

    def hook(path: str):
        p = os.path.realpath(path)
        if p == root or p.startswith(root + os.sep):
            return make_finder(path)
        raise ImportError("not the package directory")

    sys.path_hooks.insert(0, hook)
    sys.path_importer_cache.clear()


def _install_reference_shim() -> None:
    """``learnware.model.BaseModel`` for reference-format packages (learndock/package/compat.py,
    loaded by file path so that the rest of learndock is not imported)."""
    import learndock

    path = os.path.join(os.path.dirname(learndock.__file__), "package", "compat.py")
    spec = importlib.util.spec_from_file_location("_learndock_compat", path)
    if spec is None or spec.loader is None:
        return
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.install_reference_shim()


def import_package_class(root: str, module: str, class_name: str) -> type:
    """Import ``class_name`` from ``module`` of the package at ``root`` (a fresh package name,
    nothing added to ``sys.path``), from sources only."""
    _install_reference_shim()
    pkg_name = f"_learndock_pkg_{uuid.uuid4().hex[:12]}"
    init = os.path.join(root, "__init__.py")
    if os.path.isfile(init):
        spec = importlib.util.spec_from_file_location(
            pkg_name, init, loader=_SourceOnlyLoader(pkg_name, init),
            submodule_search_locations=[root],
        )
    else:
        spec = importlib.machinery.ModuleSpec(pkg_name, None, is_package=True)
        spec.submodule_search_locations = [root]
    if spec is None:
        raise ImportError(f"cannot import the package at {root}")
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[pkg_name] = pkg
    if spec.loader is not None:
        spec.loader.exec_module(pkg)
    if module == "__init__.py":
        mod = pkg
    else:
        if not module.endswith(".py"):
            raise ImportError(f"model module {module!r} is not a .py file")
        mod = importlib.import_module(f"{pkg_name}.{module[:-3].replace('/', '.')}")
    cls = getattr(mod, class_name, None)
    if not isinstance(cls, type):
        raise ImportError(f"{module} defines no class {class_name!r}")
    return cls


def _args(argv: list[str]) -> dict[str, str]:
    out = {"cpu": "240", "as-mb": "0", "fsize-mb": "0"}
    it = iter(argv)
    for a in it:
        if not a.startswith("--"):
            raise SystemExit(f"unexpected argument {a!r}")
        out[a[2:]] = next(it)
    for k in ("pkg", "in", "scratch"):
        if k not in out:
            raise SystemExit(f"--{k} is required")
    return out


def main(argv: list[str] | None = None) -> None:
    args = _args(sys.argv[1:] if argv is None else argv)
    pkg_dir = os.path.realpath(args["pkg"])
    in_dir = args["in"]
    scratch = args["scratch"]
    _apply_limits(int(args["cpu"]), int(args["as-mb"]), int(args["fsize-mb"]))

    # The protocol gets its own descriptor; fd 1 and sys.stdout go to stderr, so that package
    # prints (print(), os.write(1, ...), C libraries) cannot interleave with replies.
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.dont_write_bytecode = True
    _install_source_only_imports(pkg_dir)
    os.chdir(pkg_dir)

    import numpy as np

    model = None

    def reply(**kw: object) -> None:
        proto.write(json.dumps(kw) + "\n")
        proto.flush()

    def write_output(arr: np.ndarray) -> None:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(os.path.join(scratch, OUTPUT_NAME))
        fd = os.open(
            os.path.join(scratch, OUTPUT_NAME),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
            0o644,
        )
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr, allow_pickle=False)

    # Start-up (interpreter + imports) is done: the parent's per-call timeouts start now.
    reply(ok=True, ready=True)

    for line in sys.stdin:
        try:
            msg = json.loads(line)
            op = msg.get("op")
            if op == "exit":
                reply(ok=True)
                return
            if op == "load":
                cls = import_package_class(pkg_dir, msg["module"], msg["class_name"])
                model = cls(**(msg.get("kwargs") or {}))
                methods = [m for m in METHODS if callable(getattr(model, m, None))]
                reply(ok=True, methods=methods)
                continue
            if op == "call":
                if model is None:
                    raise RuntimeError("no model loaded")
                method = msg["method"]
                if method not in METHODS:
                    raise RuntimeError(f"method {method!r} is not callable through the sandbox")
                args_ = []
                for name in msg.get("inputs", []):
                    if not isinstance(name, str) or not INPUT_NAME.fullmatch(name):
                        raise RuntimeError("bad input name")
                    args_.append(np.load(os.path.join(in_dir, name), allow_pickle=False))
                result = getattr(model, method)(*args_)
                if result is None or result is model:
                    reply(ok=True, output=False)
                    continue
                if hasattr(result, "detach"):
                    result = result.detach().cpu().numpy()
                arr = np.asarray(result)
                if arr.dtype == object:
                    arr = arr.astype(str)
                write_output(arr)
                reply(ok=True, output=True)
                continue
            reply(ok=False, error=f"unknown op {op!r}")
        except BaseException as exc:  # noqa: BLE001 -- report everything to the parent
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            reply(ok=False, error=tb[:2000])


if __name__ == "__main__":
    main()
