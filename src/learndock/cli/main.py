"""``learndock`` -- one command line over packages, specs, the market and the demo.

Scripts depend on these command names and on their ``--json`` output: keep both stable.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from learndock import __version__
from learndock.errors import LearndockError

app = typer.Typer(
    name="learndock",
    help="Publish, check, search and reuse learnwares (models + specifications).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
spec_app = typer.Typer(help="Build statistical specifications from your data (stays local).",
                       no_args_is_help=True)
app.add_typer(spec_app, name="spec")

console = Console()
err = Console(stderr=True)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def fail(msg: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        console.print(f"learndock {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    pass


def _load_semantic(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
        fail(f"cannot read semantic spec {path}: {exc}")


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

    try:
        digest_ = do_pack(path, output, semantic=_load_semantic(semantic))
    except LearndockError as exc:
        fail(str(exc))
    console.print(f"wrote {output} (python-format model; digest {digest_})")


@spec_app.command("table")
def spec_table(
    data: Annotated[Path, typer.Argument(help="CSV, TSV, Parquet or .npy file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Spec JSON to write.")],
    n_points: Annotated[int, typer.Option("--n-points", "-k", help="Reduced set size K.")] = 100,
    kernel_from: Annotated[
        Path | None,
        typer.Option(help="Reuse the kernel of this spec JSON (to compare with it / its island)."),
    ] = None,
    gamma: Annotated[float | None, typer.Option(help="Kernel gamma (default 1/d).")] = None,
    scale: Annotated[
        str, typer.Option(help="'auto' (std rounded to a power of 2), 'none' or a number.")
    ] = "auto",
    columns: Annotated[str | None, typer.Option(help="Comma-separated columns to use.")] = None,
    missing: Annotated[str, typer.Option(help="NaN/inf policy: impute, drop or error.")] = "impute",
    seed: Annotated[int, typer.Option(help="Random seed (same data + seed = same spec).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Build an RKME table spec of your data. The data never leave your machine."""
    import numpy as np

    from learndock.cli.data import read_table
    from learndock.spec import RKMETableSpec, load_stat_spec

    try:
        X, names = read_table(data, columns.split(",") if columns else None)
        kernel = load_stat_spec(kernel_from, user=True).kernel if kernel_from else None
        scale_arg: Any
        if scale == "auto":
            scale_arg = "auto"
        elif scale == "none":
            scale_arg = None
        else:
            try:
                scale_arg = float(scale)
            except ValueError:
                fail(f"--scale must be 'auto', 'none' or a number, not {scale!r}")
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
        spec.save(output)
    except LearndockError as exc:
        fail(str(exc))
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
        "imputed_cells": spec.fit_info.get("imputed_cells"),
    }
    _show(info, f"RKME table spec of {data.name}", as_json)
    if not as_json and len(set(np.asarray(spec.kernel.scale).tolist())) > 1:
        console.print("[dim]per-feature kernel scales were inferred from the data[/]")


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
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Build an RKME image spec (random-conv encoder, 32x32 canonical size). Images stay local."""
    import time

    from learndock.cli.data import read_images
    from learndock.spec import RandomConvEncoder, RKMEImageSpec

    t0 = time.perf_counter()
    try:
        X = read_images(data)
        enc = RandomConvEncoder(device=device, batch_size=batch_size)
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


def main() -> None:
    from learndock.cli import (
        client_cmd,  # registers `learndock login/logout/upload/status/search/download`
        market_cmd,  # noqa: F401 -- registers `learndock market ...`
        server_cmd,  # registers `learndock serve/worker/users/tokens`
    )

    server_cmd.register(app)
    client_cmd.register(app)

    with contextlib.suppress(ImportError):
        from learndock.cli import demo_cmd  # noqa: F401 -- registers `learndock demo`
    try:
        app()
    except LearndockError as exc:  # a command that did not say it itself: still no traceback
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
