"""``learndock`` -- one command line over packages, specs, the market and the demo.

Scripts depend on these command names and on their ``--json`` output: keep both stable.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from learndock import __version__
from learndock.errors import LearndockError

#: Set by the global ``--debug`` option (or ``LEARNDOCK_DEBUG=1``): errors keep their traceback.
DEBUG = {"on": False}


def describe_error(exc: BaseException) -> str:
    """One line for an error no command turned into a message itself."""
    if isinstance(exc, LearndockError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename}" if exc.filename else str(exc)
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return (f"{exc.filename} is a file where a folder is needed" if exc.filename
                else str(exc))
    if isinstance(exc, IsADirectoryError):
        return f"{exc.filename} is a folder where a file is needed"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc}: {exc.filename}"
    text = " ".join(str(exc).split())[:500]
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"{what} (learndock --debug ... shows where)"


class _Root(TyperGroup):
    """The root command group: any exception a command lets through becomes one error line on
    stderr and exit code 1 (the traceback only with ``--debug``), so a user never has to read a
    stack to learn that a file is missing."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (TyperException, Exit, Abort):  # usage errors, exit codes, Ctrl-C: typer's own
            raise
        except BrokenPipeError:  # `learndock ... | head`: the reader left; nothing to report
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(1) from None
        except Exception as exc:
            if DEBUG["on"]:
                raise
            err.print(f"[bold red]error:[/] {escape(describe_error(exc))}", highlight=False,
                      soft_wrap=True)
            raise typer.Exit(1) from None


_METAVARS = {"<int>": "N", "<float>": "X", "<str>": "TEXT", "<path>": "PATH",
             "<list[str]>": "TEXT", "<list[int]>": "N", "<list[path]>": "PATH"}


def _display_type(param: Any, ctx: Any) -> str | None:
    """Help shows nothing after a flag and a plain metavar (``N``, ``PATH``, ``TEXT``) after an
    option, instead of typer's ``<bool>`` / ``<int>`` tags (issue #16: noise in every help)."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return None
    label = typer.core.TyperOption.display_type(param, ctx)
    return _METAVARS.get(label, label)


typer.core.TyperOption.display_type_rich = _display_type  # type: ignore[method-assign]
typer.core.TyperArgument.display_type_rich = _display_type  # type: ignore[method-assign]

app = typer.Typer(
    name="learndock",
    help="Publish, check, search and reuse learnwares (models + specifications).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_Root,
)
spec_app = typer.Typer(help="Build statistical specifications from your data (stays local).",
                       no_args_is_help=True)
app.add_typer(spec_app, name="spec")
semantic_app = typer.Typer(help="The semantic spec's tag vocabulary.", no_args_is_help=True)
app.add_typer(semantic_app, name="semantic")

console = Console()
err = Console(stderr=True)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def fail(msg: str, code: int = 1) -> None:
    """One error line on stderr (never wrapped: paths and commands in it stay copyable)."""
    err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(msg: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(msg)}", highlight=False, soft_wrap=True)


def check_output_path(path: Path) -> None:
    """Refuse before any work an output whose folder does not exist (or that is a folder)."""
    if path.is_dir():
        fail(f"{path} is a folder; give a file name to write")
    if not path.parent.is_dir():
        fail(f"no folder {path.parent} to write {path.name} into")


def human_time(ts: float | None) -> str:
    """A Unix time as ``2026-12-03 15:27 UTC`` (what people read; --json keeps the number)."""
    if ts is None:
        return "-"
    import datetime as dt

    return dt.datetime.fromtimestamp(float(ts), dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def check_home(home: Path | None) -> None:
    """A market home must be a folder (made if missing); a file there is a clear error."""
    if home is not None and home.exists() and not home.is_dir():
        fail(f"--home {home} is a file; a market home is a folder (made if it does not exist)")


def _version(value: bool) -> None:
    if value:
        console.print(f"learndock {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show Python tracebacks on errors.")
    ] = False,
) -> None:
    DEBUG["on"] = debug or os.environ.get("LEARNDOCK_DEBUG", "") not in ("", "0")
    # Packages promise inputs by column order (input.features), so models fitted on a
    # DataFrame get arrays; scikit-learn's warning about that would repeat on every call.
    import warnings

    warnings.filterwarnings("ignore", message="X does not have valid feature names")


def _load_semantic(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
        fail(f"cannot read semantic spec {path}: {exc}")


@semantic_app.command("values")
def semantic_values(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the allowed values of every semantic tag (for learnware.yaml and search filters)."""
    from learndock.cli.vocab import TAGS, all_values

    vals = all_values()
    if as_json:
        emit_json(vals)
        return
    for tag, options in vals.items():
        console.print(f"[bold]{tag}[/]: {TAGS[tag][1]}", highlight=False)
        line = " "
        for i, v in enumerate(options):  # wrap between values, never inside one
            item = f" {v}{',' if i < len(options) - 1 else ''}"
            if len(line) + len(item) > 78:
                console.print(line, highlight=False, markup=False)
                line = " "
            line += item
        console.print(line, highlight=False, markup=False)


@app.command()
def pack(
    directory: Annotated[Path, typer.Argument(help="Package directory (learnware.yaml at its root).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Zip file to write.")],
    semantic: Annotated[
        Path | None, typer.Option(help="Semantic spec JSON (for reference-format packages).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Validate a package directory and write a deterministic, safe zip."""
    from learndock.package import pack as do_pack

    if not directory.exists():
        fail(f"no package folder at {directory}")
    check_output_path(output)
    try:
        digest = do_pack(directory, output, semantic=_load_semantic(semantic))
    except LearndockError as exc:
        fail(str(exc))
    if as_json:
        emit_json({"output": str(output), "digest": digest})
    else:
        console.print(f"wrote {output} (sha256 digest {digest})")


@app.command()
def check(
    path: Annotated[Path, typer.Argument(help="Package zip or directory.")],
    trust_remote_code: Annotated[
        bool, typer.Option(help="Run python-format model code in this process.")
    ] = False,
    sandbox: Annotated[bool, typer.Option(help="Run python-format model code in the sandbox.")] = False,
    no_run: Annotated[bool, typer.Option("--no-run", help="Skip loading/running the model.")] = False,
    semantic: Annotated[Path | None, typer.Option(help="Semantic spec JSON (reference zips).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check a package as the dock does on upload; exit code 1 if it would be rejected."""
    from learndock.package import check_package

    if not path.exists():
        fail(f"file not found: {path}")
    try:
        report = check_package(
            path,
            run_model=not no_run,
            trust_remote_code=trust_remote_code,
            sandbox=sandbox,
            semantic=_load_semantic(semantic),
        )
    except LearndockError as exc:
        fail(str(exc))
    if as_json:
        emit_json(report.to_dict())
    else:
        for item in report.items:
            mark = "[green]ok[/]" if item.ok else "[red]FAIL[/]"
            console.print(f"{mark:>6} {item.name}: {item.message}", highlight=False)
        console.print("[bold green]accepted[/]" if report.ok else "[bold red]rejected[/]")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def digest(path: Annotated[Path, typer.Argument(help="Package zip or directory.")]) -> None:
    """Print the package's content digest (SHA-256 over files in canonical order)."""
    from learndock.package import package_digest

    if not path.exists():
        fail(f"file not found: {path}")
    try:
        console.print(package_digest(path))
    except LearndockError as exc:
        fail(str(exc))


@app.command("import-reference")
def import_reference(
    path: Annotated[Path, typer.Argument(help="Reference-format learnware zip or directory.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="learndock zip to write.")],
    semantic: Annotated[
        Path | None, typer.Option(help="Semantic spec JSON (if the zip carries none).")
    ] = None,
) -> None:
    """Convert a reference-dock learnware zip into a learndock package."""
    from learndock.package import pack as do_pack

    if not path.exists():
        fail(f"file not found: {path}")
    check_output_path(output)
    try:
        digest_ = do_pack(path, output, semantic=_load_semantic(semantic))
    except LearndockError as exc:
        fail(str(exc))
    console.print(f"wrote {output} (python-format model; digest {digest_})")


def _split(value: str | None) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()] if value else []


def _scale_arg(scale: str) -> Any:
    if scale == "auto":
        return "auto"
    if scale == "none":
        return None
    try:
        return float(scale)
    except ValueError:
        fail(f"--scale must be 'auto', 'none' or a number, not {scale!r}")


MISSING_POLICIES = ("impute", "drop", "error")


def read_descriptions(path: Path, names: list[str]) -> list[str]:
    """One description per column from ``path``: lines ``name: description`` (any order, every
    column named once) or plain lines in column order; blank lines and ``#`` comments skipped."""
    from learndock.errors import SpecError

    if not path.is_file():
        raise SpecError(f"descriptions file not found: {path}")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    pairs = [ln.split(":", 1) for ln in lines]
    named = {p[0].strip(): p[1].strip() for p in pairs if len(p) == 2 and p[0].strip() in names}
    if named and len(named) == len(lines):
        missing = [n for n in names if n not in named]
        if missing:
            raise SpecError(f"{path.name}: no description for column(s) {', '.join(missing)}")
        out = [named[n] for n in names]
    elif len(lines) == len(names):
        out = lines
    else:
        raise SpecError(f"{path.name}: {len(lines)} description line(s) for {len(names)} "
                        "column(s); give one line per column ('name: description' or plain "
                        "lines in column order)")
    empty = [n for n, d in zip(names, out, strict=True) if not d]
    if empty:
        raise SpecError(f"{path.name}: empty description for column(s) {', '.join(empty)}")
    return out


def default_descriptions(data: Path, names: list[str]) -> list[str] | None:
    """The column names as descriptions -- unless they are made-up ones (``.npy`` columns)."""
    if data.suffix.lower() == ".npy":
        return None
    return list(names)


@spec_app.command("table")
def spec_table(
    data: Annotated[Path, typer.Argument(help="CSV, TSV, Parquet or .npy file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Spec JSON to write.")],
    n_points: Annotated[int, typer.Option("--n-points", "-k", help="Reduced set size K.")] = 100,
    target: Annotated[str | None, typer.Option(
        help="The label column: left out of the spec (a spec describes the inputs only).",
        show_default=False)] = None,
    drop: Annotated[str | None, typer.Option(
        help="Comma-separated columns to leave out (ids, timestamps, ...).",
        show_default=False)] = None,
    kernel_from: Annotated[
        Path | None,
        typer.Option(help="Fit with the kernel in this file: an island's kernel (`learndock "
                          "market kernel`) or a spec JSON (to compare with it).",
                     show_default=False),
    ] = None,
    island: Annotated[str | None, typer.Option(
        help="Fit with this island's current kernel, looked up in the local market (--home) "
             "or a dock (--url, or the saved login): the sharpest match there.",
        show_default=False)] = None,
    url: Annotated[str | None, typer.Option(
        "--url", help="With --island: the dock to ask.", show_default=False)] = None,
    home: Annotated[Path | None, typer.Option(
        "--home", help="With --island: the local market.", show_default=False)] = None,
    gamma: Annotated[float | None, typer.Option(help="Kernel gamma [default: 1/d].",
                                                show_default=False)] = None,
    scale: Annotated[
        str, typer.Option(help="'auto' (std rounded to a power of 2), 'none' or a number.")
    ] = "auto",
    columns: Annotated[str | None, typer.Option(help="Comma-separated columns to use.",
                                                show_default=False)] = None,
    missing: Annotated[str, typer.Option(
        help="NaN/inf cells: impute (column means), drop (the rows) or error.")] = "impute",
    seed: Annotated[int, typer.Option(help="Random seed (same data + seed = same spec).")] = 0,
    descriptions: Annotated[Path | None, typer.Option(
        help="What each column is, one line per column: 'name: description', or plain lines "
             "in column order [default: the column names]. Kept in the spec, so `learndock "
             "search` also finds learnwares of other feature spaces.",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Build an RKME table spec of your data. The data never leave your machine."""
    import numpy as np

    from learndock.cli.data import label_like_columns, read_table
    from learndock.spec import GaussianKernel, RKMETableSpec

    if island is not None and kernel_from is not None:
        fail("give --island or --kernel-from, not both")
    if (url is not None or home is not None) and island is None:
        fail("--url and --home say where to look up --island; give --island too")
    if missing not in MISSING_POLICIES:
        fail(f"--missing must be one of {', '.join(MISSING_POLICIES)}, not {missing!r}")
    check_output_path(output)
    scale_arg = _scale_arg(scale)
    left_out = _split(drop) + ([target] if target else [])
    try:
        X, names = read_table(data, _split(columns) or None, left_out or None)
        kernel = None
        if kernel_from is not None:  # (spec.io pulls in the settings: only when needed)
            from learndock.spec.io import load_kernel

            kernel = load_kernel(kernel_from)
        if island is not None:
            from learndock.cli import client_cmd

            target_ = client_cmd.resolve_target(url, False, home, None)
            doc = client_cmd.island_kernel_doc(target_, island, as_json)
            kernel = GaussianKernel.from_dict(doc["kernel"])
        descs = (read_descriptions(descriptions, names) if descriptions is not None
                 else default_descriptions(data, names))
        spec = RKMETableSpec.fit(
            X,
            n_points,
            kernel=kernel,
            gamma=gamma,
            scale=scale_arg,
            missing=missing,
            random_state=seed,
            progress=None if as_json else X.shape[0] >= 100_000,
        )
        if descs is not None:
            from learndock.spec.table import with_columns

            spec = with_columns(spec, names, descs)
        spec.save(output)
    except LearndockError as exc:
        fail(str(exc))
    if target is None:
        for name, why in label_like_columns(X, names):
            warn(f"column {name!r} may be the label ({why}); if so, leave it out with "
                 f"--target {name}")
    info = {
        "output": str(output),
        "n_samples": spec.n_samples,
        "dimension": spec.dimension,
        "n_points": spec.n_points,
        "kernel": spec.kernel.key(),
        "gamma": spec.kernel.gamma,
        "fingerprint": spec.fingerprint(),
        "rounds": spec.fit_info.get("rounds"),
        "converged": spec.fit_info.get("converged"),
    }
    if missing == "drop":  # nothing was imputed: say how many rows were left out instead
        info["dropped_rows"] = int(X.shape[0] - spec.n_samples)
    else:
        info["imputed_cells"] = spec.fit_info.get("imputed_cells")
    if left_out:
        info["left_out"] = left_out
    if island is not None:
        info["island"] = island
    if descriptions is not None:  # (the default, the column names, is not news)
        info["column_descriptions"] = f"from {descriptions.name}"
    _show(info, f"RKME table spec of {data.name}", as_json)
    if as_json:
        return
    if len(set(np.asarray(spec.kernel.scale).tolist())) > 1:
        console.print("[dim]per-feature kernel scales were inferred from the data[/]")
    if info["converged"] is False:
        hist = spec.fit_info.get("mmd2_history") or []
        change = (f" (MMD^2 {hist[0]:.3g} -> {hist[-1]:.3g})" if len(hist) > 1 else "")
        console.print(f"[dim]converged False: the fit stopped at its round limit while MMD^2 "
                      f"was still falling{change}; the spec is valid, only less tight than it "
                      "could be[/]", highlight=False)


def _embedding_spec_info(spec: Any, output: Path, elapsed: float) -> dict[str, Any]:
    return {
        "output": str(output),
        "type": spec.type_name,
        "n_samples": spec.n_samples,
        "n_points": spec.n_points,
        "encoder": spec.encoder_id,
        "dimension": spec.dimension,
        "fingerprint": spec.fingerprint(),
        "rounds": spec.fit_info.get("rounds"),
        "seconds": round(elapsed, 2),
    }


def _show(info: dict[str, Any], title: str, as_json: bool) -> None:
    if as_json:
        emit_json(info)
        return
    t = Table(title=title, show_header=False)
    for k, v in info.items():
        t.add_row(k, f"{v:.6g}" if isinstance(v, float) else str(v))
    console.print(t)


@spec_app.command("image")
def spec_image(
    data: Annotated[Path, typer.Argument(help="A folder of image files or an (N, ...) .npy array.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Spec JSON to write.")],
    n_points: Annotated[int, typer.Option("--n-points", "-k", help="Reduced set size K.")] = 100,
    device: Annotated[str, typer.Option(help="auto (GPU if present), cpu or cuda[:i].")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per encoder batch.")] = 512,
    seed: Annotated[int, typer.Option(help="Random seed (same data + seed = same spec).")] = 0,
    encoder: Annotated[str, typer.Option(
        help="fmnist-cnn (a small CNN trained on Fashion-MNIST's training images, the "
             "default) or random-conv (fixed random weights, torch). Specs of different "
             "encoders are never compared: use the one the market's image learnwares use.")
    ] = "fmnist-cnn",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Build an RKME image spec (32x32 canonical size, then the encoder). Images stay local."""
    import time

    from learndock.cli.data import read_images
    from learndock.spec import RandomConvEncoder, RKMEImageSpec

    if encoder not in ("fmnist-cnn", "random-conv"):
        fail(f"unknown encoder {encoder!r}: fmnist-cnn or random-conv")
    check_output_path(output)
    t0 = time.perf_counter()
    try:
        X = read_images(data)
        enc = (RKMEImageSpec.default_encoder(batch_size=batch_size) if encoder == "fmnist-cnn"
               else RandomConvEncoder(device=device, batch_size=batch_size))
        spec = RKMEImageSpec.fit(X, n_points, encoder=enc, random_state=seed,
                                 progress=None if as_json else X.shape[0] >= 20_000)
        spec.save(output)
    except LearndockError as exc:
        fail(str(exc))
    _show(_embedding_spec_info(spec, output, time.perf_counter() - t0),
          f"RKME image spec of {data.name}", as_json)


@spec_app.command("text")
def spec_text(
    data: Annotated[Path, typer.Argument(help=".txt (one text per line), CSV/TSV or a folder "
                                              "of .txt files.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Spec JSON to write.")],
    n_points: Annotated[int, typer.Option("--n-points", "-k", help="Reduced set size K.")] = 100,
    column: Annotated[str | None, typer.Option(help="CSV/TSV column holding the text.")] = None,
    device: Annotated[str, typer.Option(help="auto (GPU if present), cpu or cuda[:i].")] = "auto",
    cache: Annotated[Path | None, typer.Option(help="Embedding cache file (default under "
                                                      "LEARNDOCK_HOME/cache).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same data + seed = same spec).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Build an RKME text spec (all-MiniLM-L6-v2 embeddings, cached). Texts stay local."""
    import time

    from learndock.cli.data import read_texts
    from learndock.spec import MiniLMEncoder, RKMETextSpec

    check_output_path(output)
    t0 = time.perf_counter()
    try:
        texts = read_texts(data, column)
        enc = MiniLMEncoder(device=device, cache=cache)
        spec = RKMETextSpec.fit(texts, n_points, encoder=enc, random_state=seed,
                                progress=None if as_json else len(texts) >= 200)
        spec.save(output)
    except LearndockError as exc:
        fail(str(exc))
    _show(_embedding_spec_info(spec, output, time.perf_counter() - t0),
          f"RKME text spec of {data.name}", as_json)


def full_app() -> typer.Typer:
    """The ``learndock`` app with every command registered (idempotent; tests use it too)."""
    from learndock.cli import (
        client_cmd,  # registers `learndock login/logout/upload/status/search/download`
        init_cmd,  # noqa: F401 -- registers `learndock init`
        market_cmd,  # noqa: F401 -- registers `learndock market ...`
        reuse_cmd,  # noqa: F401 -- registers `learndock reuse`
        server_cmd,  # registers `learndock serve/worker/users/tokens`
    )

    server_cmd.register(app)
    client_cmd.register(app)
    with contextlib.suppress(ImportError):
        from learndock.cli import demo_cmd  # noqa: F401 -- registers `learndock demo`
    _reflow_help(app)
    return app


def _reflow_help(typer_app: typer.Typer) -> None:
    """Docstrings wrap at 100 columns in the source; typer's rich help keeps those line breaks,
    so join the lines of each paragraph and let the terminal's width wrap them."""
    import inspect
    import re

    for info in typer_app.registered_commands:
        doc = info.help or (inspect.getdoc(info.callback) if info.callback else None)
        if doc:
            info.help = re.sub(r"(?<!\n)\n(?!\n)", " ", doc)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


#: Command groups whose commands all live in this module: running one of them needs none of the
#: other command modules (importing and registering them all costs ~0.1 s, a sixth of a whole
#: `learndock spec table` run's budget), so they are only loaded for other commands.
_SELF_CONTAINED_GROUPS = ("spec",)


def main() -> None:
    if sys.argv[1:2] and sys.argv[1] in _SELF_CONTAINED_GROUPS:
        _reflow_help(app)
    else:
        full_app()
    try:
        app()
    except LearndockError as exc:  # a command that did not say it itself: still no traceback
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
