"""Run untrusted ``python``-format model code in a jail.

The engine and market never import package code. :class:`SandboxedRuntime` runs it in
``python -I -B -m learndock.sandbox.worker`` inside a bubblewrap jail (a dedicated unprivileged
uid; only the package, the Python environment -- both read-only -- and a private scratch dir
visible; no network and no host sockets; seccomp; a cgroup bounding memory and process count
of the whole tree; killed as a whole on timeout, close or the dock's death). Arrays cross the
boundary as ``.npy`` files under fixed names, read with ``allow_pickle=False``; replies are
parsed strictly. Where the jail cannot be built, python-format models are refused unless the
operator opts out (``LEARNDOCK_JAIL=none``). See :mod:`learndock.sandbox.jail`.

Imports are lazy: the worker imports ``learndock.sandbox.worker`` inside the jail and must not
pull in the rest of learndock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from learndock.sandbox.jail import JailSupport, jail_support
    from learndock.sandbox.runner import SandboxedRuntime

__all__ = ["JailSupport", "SandboxedRuntime", "jail_support"]


def __getattr__(name: str) -> Any:
    if name == "SandboxedRuntime":
        from learndock.sandbox.runner import SandboxedRuntime

        return SandboxedRuntime
    if name in ("JailSupport", "jail_support"):
        from learndock.sandbox import jail

        return getattr(jail, name)
    raise AttributeError(name)
