"""``learndock market ...``: the local market from the command line."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from learndock.cli import client_cmd, vocab
from learndock.cli.main import app, check_home, console, emit_json, fail, human_time
from learndock.errors import LearndockError

market_app = typer.Typer(help="The local market: list, show, versions, delete, islands, kernel, verify "
                              "(and add, search, download: aliases of upload, search, download).",
                         no_args_is_help=True)
app.add_typer(market_app, name="market")

HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="Market directory (default $LEARNDOCK_HOME or ~/.learndock).")
]
DbOpt = Annotated[
    str | None, typer.Option("--database-url", help="SQLAlchemy URL (default SQLite in --home).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _market(home: Path | None, db: str | None):  # noqa: ANN202
    from learndock.market import Market

    check_home(home)
    try:
        return Market(home, database_url=db)
    except LearndockError as exc:
        fail(str(exc))


def _info_dict(info: Any) -> dict[str, Any]:
    d = asdict(info)
    d["semantic"] = info.semantic.to_dict() if info.semantic else None
    return d


@market_app.command("list")
def list_(
    data_type: Annotated[str | None, typer.Option(
        help=vocab.choices("data_type"), show_default=False)] = None,
    task_type: Annotated[str | None, typer.Option(
        help=vocab.choices("task_type"), show_default=False)] = None,
    scenario: Annotated[list[str] | None, typer.Option(
        help=vocab.choices("scenarios", "Scenario tag (repeatable)."), show_default=False)] = None,
    page: Annotated[int, typer.Option(help="Page number, from 0.")] = 0,
    page_size: Annotated[int, typer.Option(help="Learnwares per page.")] = 50,
    include_rejected: Annotated[bool, typer.Option(
        "--include-rejected", help="List rejected learnwares too.")] = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List learnwares, newest first."""
    m = _market(home, database_url)
    q = {k: v for k, v in {"data_type": data_type, "task_type": task_type,
                           "scenarios": scenario}.items() if v}
    try:
        pg = m.list(q or None, page=page, page_size=page_size, include_rejected=include_rejected)
    except LearndockError as exc:
        fail(str(exc))
    if as_json:
        emit_json({"total": pg.total, "page": pg.page, "page_size": pg.page_size,
                   "items": [_info_dict(i) for i in pg.items]})
        return
    # Fits 80 columns: the 16-character id whole (it is what the other commands take), the
    # name cut with an ellipsis; the island is in `market show`.
    t = Table(title=f"{pg.total} learnware(s)", box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("id", no_wrap=True)
    t.add_column("name", no_wrap=True, overflow="ellipsis", max_width=24)
    t.add_column("v", justify="right")
    t.add_column("status", no_wrap=True)
    t.add_column("task", no_wrap=True, overflow="ellipsis", max_width=14)
    t.add_column("added", no_wrap=True)
    for i in pg.items:
        t.add_row(i.id, i.name, str(i.current_version or "-"), i.status,
                  i.semantic.task_type.value if i.semantic else "?",
                  human_time(i.created_at)[:10])
    console.print(t)


@market_app.command("show")
def show(
    learnware_id: str, home: HomeOpt = None, database_url: DbOpt = None, as_json: JsonOpt = False
) -> None:
    """Show one learnware's metadata and semantic spec."""
    m = _market(home, database_url)
    try:
        info = m.get(learnware_id)
    except LearndockError as exc:
        fail(str(exc))
    if as_json:
        emit_json(_info_dict(info))
        return
    t = Table(show_header=False, title=f"learnware {info.id}", box=box.SIMPLE)
    d = _info_dict(info)
    sem = d.pop("semantic") or {}
    for k, v in d.items():
        if v is None:
            continue  # e.g. no owner recorded: nothing to show
        t.add_row(k, human_time(v) if k.endswith("_at") else str(v))
    for k in ("description", "data_type", "task_type", "library_type", "scenarios", "license"):
        v = sem.get(k)
        if v is not None:
            t.add_row(k, ", ".join(v) if isinstance(v, list) else str(v))
    console.print(t)


@market_app.command("versions")
def versions(
    learnware_id: str, home: HomeOpt = None, database_url: DbOpt = None, as_json: JsonOpt = False
) -> None:
    """List a learnware's versions with their check status."""
    m = _market(home, database_url)
    try:
        vs = m.versions(learnware_id)
    except LearndockError as exc:
        fail(str(exc))
    if as_json:
        emit_json([asdict(v) for v in vs])
        return
    t = Table(title=f"versions of {learnware_id}")
    for col in ("#", "semver", "status", "size", "sha256", "available"):
        t.add_column(col, overflow="fold")
    for v in vs:
        t.add_row(str(v.number), v.semver, v.status, str(v.size_bytes), v.package_sha256[:16],
                  "yes" if v.available else "no")
    console.print(t)


@market_app.command("delete")
def delete(
    learnware_id: str, home: HomeOpt = None, database_url: DbOpt = None, as_json: JsonOpt = False
) -> None:
    """Hide a learnware and release its package files."""
    m = _market(home, database_url)
    try:
        m.delete(learnware_id)
    except LearndockError as exc:
        fail(str(exc))
    if as_json:
        emit_json({"deleted": learnware_id})
    else:
        console.print(f"deleted {learnware_id}")


@market_app.command("islands")
def islands(home: HomeOpt = None, database_url: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List specification islands (comparable feature spaces + kernels)."""
    m = _market(home, database_url)
    isl = m.islands()
    if as_json:
        emit_json([{"key": i.key, "data_type": i.data_type, "dimension": i.dimension,
                    "feature_names": i.feature_names, "kernel": i.kernel.to_dict(),
                    "kernel_version": i.kernel_version, "encoder": i.encoder,
                    "n_learnwares": i.n_learnwares} for i in isl])
        return
    t = Table(title="islands")
    for col in ("key", "data", "dim", "kernel (market's, version)", "learnwares"):
        t.add_column(col, overflow="fold")
    for i in isl:
        t.add_row(i.key, i.data_type, str(i.dimension),
                  f"v{i.kernel_version} {i.kernel.describe()}", str(i.n_learnwares))
    console.print(t)


@market_app.command("kernel")
def kernel(
    island: Annotated[str, typer.Argument(help="The island's key (`learndock market islands`).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Kernel JSON to write.",
                                         show_default=False)],
    url: client_cmd.UrlOpt = None,
    local: client_cmd.LocalOpt = False,
    home: client_cmd.HomeOpt = None,
    database_url: client_cmd.DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Save an island's current kernel: fit your spec with it (`learndock spec table
    --kernel-from FILE`, or `--island KEY` directly) for the sharpest match there."""
    import json

    from learndock.cli.main import check_output_path

    check_output_path(output)
    target = client_cmd.resolve_target(url, local, home, database_url)
    doc = client_cmd.island_kernel_doc(target, island, as_json)
    output.write_text(json.dumps(doc, indent=2) + "\n")
    if as_json:
        emit_json({"output": str(output), "island": doc.get("island"),
                   "kernel_version": doc.get("kernel_version")})
    else:
        console.print(f"wrote {output}: kernel version {doc.get('kernel_version')} of island "
                      f"{doc.get('island')}", highlight=False, markup=False)


@market_app.command("verify")
def verify(
    home: HomeOpt = None, database_url: DbOpt = None, sweep: bool = False,
    as_json: JsonOpt = False,
) -> None:
    """Check store consistency; with --sweep remove unreferenced blobs older than an hour."""
    m = _market(home, database_url)
    problems = m.verify()
    r = m.sweep() if sweep else None
    if as_json:
        emit_json({
            "consistent": not problems,
            "problems": problems,
            "swept": None if r is None else {"blobs": r.removed_blobs,
                                             "temp_files": r.removed_temp_files},
        })
    else:
        for p in problems:
            console.print(f"[red]problem:[/] {p}")
        if r is not None:
            console.print(
                f"swept {len(r.removed_blobs)} blob(s), {r.removed_temp_files} temp file(s)"
            )
        if not problems:
            console.print("store is consistent")
    if problems:
        raise typer.Exit(1)


# `market add`, `market search` and `market download` are aliases of `learndock upload`,
# `learndock search` and `learndock download`: one implementation (learndock.cli.client_cmd),
# documented there. Under `market` they act on the local market unless a dock is named
# (--url) or logged in to (`learndock login`; --local or --home keep them local).
for _alias, _command in (("add", client_cmd.upload), ("search", client_cmd.search),
                         ("download", client_cmd.download)):
    market_app.command(_alias, help=f"Alias of `learndock {_command.__name__}` (same options; "
                                    "see its --help).")(_command)
