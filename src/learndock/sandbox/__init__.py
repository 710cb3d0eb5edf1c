"""Run untrusted ``python``-format model code in a separate, limited process.

The engine and market never import package code. :class:`SandboxedRuntime` starts
``python -m learndock.sandbox.worker`` in a scratch copy of the package with a minimal
environment, resource limits (address space, CPU time, open files), no network where the OS
allows it (a fresh network namespace via ``unshare -n``), and a timeout per call. Arrays cross
the boundary as ``.npy`` files read with ``allow_pickle=False``; nothing is unpickled.
"""

from learndock.sandbox.runner import SandboxedRuntime

__all__ = ["SandboxedRuntime"]
