"""``learndock demo``: build the demo market from real data, then search and reuse as a user."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from learndock.cli.main import app, check_home, console


@app.command()
def demo(
    home: Annotated[
        Path | None, typer.Option(help="Where the demo market lives (default ~/.learndock/demo).")
    ] = None,
    quick: Annotated[bool, typer.Option(help="Fewer learnwares and users (about a minute).")] = False,
    n_labels: Annotated[int, typer.Option(help="Labels the user has for data-dependent reuse.")] = 50,
) -> None:
    """Build a market of real learnwares (Birthdays per state, digits subsets), then search and
    reuse them as a user, and print losses against mean/best in market and your own model."""
    from learndock.demo import run_demo

    check_home(home)
    run_demo(home, quick=quick, n_labels=n_labels, console=console)
