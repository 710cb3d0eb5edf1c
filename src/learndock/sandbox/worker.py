"""Child side of the sandbox: load the model class, answer calls over stdin/stdout (JSON).

Runs as ``python -I -m learndock.sandbox.worker`` with the package copy as working directory.
Limits are applied before any package code is imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback


def _apply_limits() -> None:
    import resource

    mem = int(os.environ.get("LEARNDOCK_SANDBOX_MEMORY_MB", "4096")) * 1024 * 1024
    cpu = int(os.environ.get("LEARNDOCK_SANDBOX_CPU_S", "240"))
    for res, value in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu)):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(res, (value, value))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main() -> None:
    _apply_limits()
    from pathlib import Path

    import numpy as np

    from learndock.package.runtime import import_package_class

    out = sys.stdout
    sys.stdout = sys.stderr  # package prints must not corrupt the protocol
    root = Path.cwd()
    io_dir = root.parent / "io"
    model = None
    counter = 0

    def reply(**kw: object) -> None:
        out.write(json.dumps(kw) + "\n")
        out.flush()

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
                cls = import_package_class(root, msg["module"], msg["class_name"])
                model = cls(**(msg.get("kwargs") or {}))
                methods = [
                    m
                    for m in ("predict", "predict_proba", "fit", "finetune", "partial_fit")
                    if callable(getattr(model, m, None))
                ]
                reply(ok=True, methods=methods)
                continue
            if op == "call":
                if model is None:
                    raise RuntimeError("no model loaded")
                method = msg["method"]
                if method not in ("predict", "predict_proba", "fit", "finetune", "partial_fit"):
                    raise RuntimeError(f"method {method!r} is not callable through the sandbox")
                args = [
                    np.load(io_dir / os.path.basename(p), allow_pickle=False)
                    for p in msg.get("inputs", [])
                ]
                result = getattr(model, method)(*args)
                if result is None or result is model:
                    reply(ok=True, output=None)
                    continue
                if hasattr(result, "detach"):
                    result = result.detach().cpu().numpy()
                arr = np.asarray(result)
                if arr.dtype == object:
                    arr = arr.astype(str)
                counter += 1
                name = f"out{counter}.npy"
                np.save(io_dir / name, arr, allow_pickle=False)
                reply(ok=True, output=name)
                continue
            reply(ok=False, error=f"unknown op {op!r}")
        except BaseException as exc:  # noqa: BLE001 -- report everything to the parent
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            reply(ok=False, error=tb[:2000])


if __name__ == "__main__":
    main()
