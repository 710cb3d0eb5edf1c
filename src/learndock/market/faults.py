"""Crash points for testing atomicity (kill -9 at a named step).

``LEARNDOCK_CRASH_AT=<point>`` makes the process SIGKILL itself when it reaches that point, the
way database test suites inject failures. Unset (always, in normal use), it does nothing.
"""

from __future__ import annotations

import os
import signal


def crashpoint(name: str) -> None:
    if os.environ.get("LEARNDOCK_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
