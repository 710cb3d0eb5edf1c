"""Helpers shared by the experiment scenarios: folders, caching, tables, plots, progress.

* **Folders.** Results go to ``benchmarks/results/<scenario>/`` (``--out`` to change); built
  artefacts (markets, reference runs) to ``benchmarks/results/cache/<scenario>/`` (git-ignored,
  ``--cache`` to change), in a sub-folder named after a hash of everything that built them, so
  a changed setting never reuses stale artefacts and an unchanged one never rebuilds.
* **Reports.** Markdown tables (:func:`markdown_table`), numbers with a fixed number of digits
  or ``n/a`` (:func:`fmt`, :func:`fmt_pm`), PNG plots through matplotlib's Agg backend (no
  display needed), JSON written atomically with the machine description.
* **Progress.** :func:`progress` is a rich progress bar on stderr that disappears when done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_ROOT = REPO_ROOT / "benchmarks" / "results"
CACHE_ROOT = RESULTS_ROOT / "cache"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- folders, cache
def results_dir(scenario: str, out: str | Path | None = None) -> Path:
    """The folder a scenario writes its report to (created)."""
    path = Path(out) if out is not None else RESULTS_ROOT / scenario
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_key(config: Mapping[str, Any]) -> str:
    """A short, stable hash of a JSON-able configuration (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class Cache:
    """A folder of built artefacts for one configuration: ``<root>/<label>-<hash(config)>/``.

    The configuration is written next to the artefacts (``config.json``) so a folder says what
    built it.
    """

    def __init__(self, scenario: str, label: str, config: Mapping[str, Any],
                 root: str | Path | None = None) -> None:
        base = Path(root) if root is not None else CACHE_ROOT / scenario
        self.key = config_key(config)
        self.dir = base / f"{label}-{self.key}"
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "config.json"
        if not cfg.exists():
            write_json(cfg, dict(config))

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def load_json(self, name: str) -> Any | None:
        p = self.path(name)
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a torn or foreign file: rebuild

    def save_json(self, name: str, obj: Any) -> Path:
        return write_json(self.path(name), obj)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-able: {type(obj).__name__}")


def _clean(obj: Any) -> Any:
    """NaN/inf become None, so the JSON is strict (json.dumps writes bare NaN otherwise)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write strict JSON atomically (temp file + rename): a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_clean(obj), fh, indent=2, default=_jsonable, allow_nan=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


# ---------------------------------------------------------------------------- numbers, tables
def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and (population) standard deviation, ignoring NaN; (nan, nan) when empty."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std())


def fmt(x: Any, digits: int = 4) -> str:
    """A number with ``digits`` decimals; ``n/a`` for None/NaN; strings pass through."""
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return x
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}f}"


def fmt_pm(mean: Any, std: Any, digits: int = 4) -> str:
    """``mean ± std`` (just the mean when std is 0/None, ``n/a`` when the mean is missing)."""
    if fmt(mean, digits) == "n/a":
        return "n/a"
    if std is None or not math.isfinite(float(std)) or float(std) == 0.0:
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def fmt_seconds(s: Any) -> str:
    if s is None or not math.isfinite(float(s)):
        return "n/a"
    s = float(s)
    if s < 1.0:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s" if s < 100 else f"{s:.0f} s"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                   align: str | None = None) -> str:
    """A GitHub markdown table. ``align``: one of ``l``/``r``/``c`` per column (default: first
    column left, the rest right). Cells are str()-ed; ``|`` in cells is escaped."""
    n = len(headers)
    align = align or ("l" + "r" * (n - 1))
    if len(align) != n:
        raise ValueError(f"align has {len(align)} entries for {n} columns")
    rule = {"l": "---", "r": "---:", "c": ":---:"}

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join(rule[a] for a in align) + "|"]
    for r in rows:
        if len(r) != n:
            raise ValueError(f"row has {len(r)} cells for {n} columns: {r!r}")
        lines.append("| " + " | ".join(cell(v) for v in r) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(path: str | Path, *, title: str, xlabel: str, ylabel: str,
                series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
                hlines: Mapping[str, float] | None = None, logx: bool = True,
                xticklabels: Sequence[str] | None = None, ax: Any = None) -> Path:
    """Line plot of ``series[name] = (x, mean, std)`` with shaded ±std bands and dashed
    horizontal reference lines; saved as PNG (or drawn on ``ax`` when one is given)."""
    plt = _pyplot()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    markers = "osD^vP*X"
    for i, (name, (x, mean, std)) in enumerate(series.items()):
        x, m, s = (np.asarray(a, dtype=float) for a in (x, mean, std))
        ok = np.isfinite(m)
        if not ok.any():
            continue
        ax.plot(x[ok], m[ok], marker=markers[i % len(markers)], label=name, lw=1.6)
        s = np.where(np.isfinite(s), s, 0.0)
        if np.any(s[ok] > 0):
            ax.fill_between(x[ok], (m - s)[ok], (m + s)[ok], alpha=0.15)
    for j, (name, value) in enumerate((hlines or {}).items()):
        if value is not None and math.isfinite(float(value)):
            ax.axhline(float(value), ls=(0, (4, 2 + j)), lw=1.0, color=f"C{(j + 5) % 10}",
                       label=name)
    if logx:
        ax.set_xscale("log")
    if xticklabels is not None:
        first = next(iter(series.values()))[0]
        ax.set_xticks(list(first))
        ax.set_xticklabels(list(xticklabels))
        ax.minorticks_off()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if own:
        return save_figure(fig, path)
    return Path(path)


def plot_bars(path: str | Path, *, title: str, ylabel: str, categories: Sequence[str],
              series: Mapping[str, Sequence[float]], ax: Any = None) -> Path:
    """Grouped bar chart: one group per category, one bar per series (NaN bars left out)."""
    plt = _pyplot()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(categories))
    for i, (name, values) in enumerate(series.items()):
        v = np.asarray(values, dtype=float)
        ax.bar(x + (i - (n - 1) / 2) * width, np.where(np.isfinite(v), v, 0.0), width,
               label=name)
    finite = [float(v) for vals in series.values() for v in vals if math.isfinite(float(v))]
    if finite and min(finite) > 0:  # zoom in: the differences are a few percent
        lo, hi = min(finite), max(finite)
        ax.set_ylim(max(0.0, lo - 0.25 * (hi - lo) - 0.02 * hi), hi + 0.1 * (hi - lo) + 0.01 * hi)
    ax.set_xticks(x)
    ax.set_xticklabels(categories, rotation=20, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    if own:
        return save_figure(fig, path)
    return Path(path)


def subplots(nrows: int, ncols: int, figsize: tuple[float, float]) -> tuple[Any, Any]:
    plt = _pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, dpi=110, squeeze=False)
    return fig, axes


def save_figure(fig: Any, path: str | Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def is_png(path: str | Path) -> bool:
    """True if the file exists and starts with the PNG signature and an IHDR chunk."""
    try:
        head = Path(path).read_bytes()[:16]
    except OSError:
        return False
    return head[:8] == PNG_MAGIC and head[12:16] == b"IHDR"


# ---------------------------------------------------------------------------- progress, timing
def progress(disable: bool = False) -> Any:
    """A transient rich progress bar (on stderr) with a bar, counts and elapsed time."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True, disable=disable,
    )


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds`` (wall) and ``sw.cpu`` (process CPU)."""

    def __enter__(self) -> Stopwatch:
        self._t, self._c = time.perf_counter(), time.process_time()
        self.seconds = self.cpu = math.nan
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t
        self.cpu = time.process_time() - self._c


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """BLAS and OpenMP limited to one thread (the benchmarks' rule on a small, shared box).

    ``threadpool_limits`` only reaches thread pools that are already loaded: scikit-learn's
    OpenMP runtime loads with its first Cython extension and torch brings a second one. So the
    environment variables are set too (read by libraries loaded later, and inherited by
    subprocesses), and scikit-learn's tree code is imported before the limit is applied.
    Measured here: a HistGradientBoostingClassifier fit took 15 s with the default 2 OpenMP
    threads on this loaded 2-core box and 0.8-1.4 s with one.
    """
    from threadpoolctl import threadpool_limits

    old = {v: os.environ.get(v) for v in THREAD_VARS}
    os.environ.update({v: "1" for v in THREAD_VARS})
    import scipy.linalg  # noqa: F401 -- load the BLAS / OpenMP pools before limiting them
    import sklearn.ensemble  # noqa: F401

    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        for v, val in old.items():
            if val is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = val


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None
