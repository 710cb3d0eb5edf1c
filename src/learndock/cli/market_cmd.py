"""``learndock market ...``: the local market from the command line."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from learndock.cli.main import app, console, emit_json, fail
from learndock.errors import LearndockError

market_app = typer.Typer(help="The local market: add, list, show, search, delete.",
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

    try:
        return Market(home, database_url=db)
    except LearndockError as exc:
        fail(str(exc))


def _info_dict(info: Any) -> dict[str, Any]:
    d = asdict(info)
    d["semantic"] = info.semantic.to_dict() if info.semantic else None
    return d


@market_app.command("add")
def add(
    package: Annotated[Path, typer.Argument(help="Package zip or directory.")],
    owner: Annotated[str | None, typer.Option(help="Owner name to record.")] = None,
    update_id: Annotated[
        str | None, typer.Option("--update", help="Add as a new version of this learnware.")
    ] = None,
    home: HomeOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check and add a learnware (or a new version of one). Exit 1 if rejected."""
    from learndock.market import RejectedError

    m = _market(home, database_url)
    try:
        r = m.update(update_id, package) if update_id else m.add(package, owner=owner)
    except RejectedError as exc:
        if as_json:
            emit_json({"status": "rejected", "stored": False, "report": exc.report.to_dict()})
        else:
            console.print(exc.report.text(), highlight=False)
        raise typer.Exit(1) from None
    except LearndockError as exc:
        fail(str(exc))
    if as_json:
        emit_json({"learnware_id": r.learnware_id, "version": r.version, "status": r.status,
                   "stored": True, "island": r.island, "report": r.report.to_dict()})
    else:
        console.print(r.report.text(), highlight=False)
        console.print(f"learnware [bold]{r.learnware_id}[/] version {r.version}: {r.status}")
    if not r.accepted:
        raise typer.Exit(1)


@market_app.command("list")
def list_(
    data_type: Annotated[str | None, typer.Option(help="Table, Image or Text.")] = None,
    task_type: Annotated[str | None, typer.Option(help="e.g. Classification.")] = None,
    scenario: Annotated[list[str] | None, typer.Option(help="Scenario tag (repeatable).")] = None,
    page: int = 0,
    page_size: int = 50,
    include_rejected: bool = False,
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
    t = Table(title=f"{pg.total} learnware(s)")
    for col in ("id", "name", "status", "version", "task", "island", "downloads"):
        t.add_column(col, overflow="fold")
    for i in pg.items:
        t.add_row(i.id, i.name, i.status, str(i.current_version or "-"),
                  i.semantic.task_type.value if i.semantic else "?",
                  (i.island or "-")[:40], str(i.download_count))
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
    t = Table(show_header=False, title=f"learnware {info.id}")
    d = _info_dict(info)
    sem = d.pop("semantic") or {}
    for k, v in d.items():
        t.add_row(k, str(v))
    for k in ("description", "data_type", "task_type", "library_type", "scenarios", "license"):
        t.add_row(k, str(sem.get(k)))
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


@market_app.command("download")
def download(
    learnware_id: str,
    output: Annotated[Path, typer.Option("-o", "--output", help="Zip file to write.")],
    version: int | None = None,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Copy a learnware's package zip out of the market."""
    m = _market(home, database_url)
    try:
        m.download(learnware_id, output, version)
    except LearndockError as exc:
        fail(str(exc))
    console.print(f"wrote {output}")


@market_app.command("islands")
def islands(home: HomeOpt = None, database_url: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List specification islands (comparable feature spaces + kernels)."""
    m = _market(home, database_url)
    isl = m.islands()
    if as_json:
        emit_json([{"key": i.key, "data_type": i.data_type, "dimension": i.dimension,
                    "feature_names": i.feature_names, "kernel": i.kernel.to_dict(),
                    "n_learnwares": i.n_learnwares} for i in isl])
        return
    t = Table(title="islands")
    for col in ("key", "data", "dim", "kernel", "learnwares"):
        t.add_column(col, overflow="fold")
    for i in isl:
        t.add_row(i.key, i.data_type, str(i.dimension), i.kernel.describe(), str(i.n_learnwares))
    console.print(t)


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


@market_app.command("search")
def search(
    text: Annotated[str | None, typer.Option(help="Free text: what your task is about.")] = None,
    spec: Annotated[Path | None, typer.Option(help="Your RKME spec JSON (learndock spec table).")] = None,
    data_type: Annotated[str | None, typer.Option(help="Table, Image or Text.")] = None,
    task_type: Annotated[str | None, typer.Option(help="e.g. Classification.")] = None,
    library_type: Annotated[str | None, typer.Option(help="e.g. Scikit-learn.")] = None,
    scenario: Annotated[list[str] | None, typer.Option(help="Scenario tag (repeatable).")] = None,
    license: Annotated[str | None, typer.Option(help="License.")] = None,
    top_k: Annotated[int, typer.Option(help="How many single results.")] = 10,
    max_mixture: Annotated[int, typer.Option(help="Most learnwares in a mixture.")] = 5,
    home: HomeOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search by tags and text and/or by your data's spec."""
    m = _market(home, database_url)
    q: dict[str, Any] = {k: v for k, v in {
        "data_type": data_type, "task_type": task_type, "library_type": library_type,
        "scenarios": scenario, "license": license, "text": text}.items() if v}
    from learndock.spec.io import load_stat_spec

    try:
        # A user spec is hostile input too: read it under the search-side caps here, whatever
        # the market does with paths.
        user_spec = load_stat_spec(spec, m.limits, user=True) if spec is not None else None
        res = m.search(q or None, spec=user_spec, top_k=top_k, max_mixture=max_mixture)
    except LearndockError as exc:
        fail(str(exc))
    if as_json:
        emit_json(res.to_dict())
        return
    t = Table(title="single learnwares")
    for col in ("rank", "id", "name", "v", "score", "mmd", "text"):
        t.add_column(col, overflow="fold")
    for r, s in enumerate(res.single, 1):
        t.add_row(str(r), s.learnware_id, s.name, str(s.version),
                  "-" if s.score is None else f"{s.score:.3f}",
                  "-" if s.mmd is None else f"{s.mmd:.4f}",
                  "-" if s.text_rank is None else f"{s.text_rank:.3g}")
    console.print(t)
    if res.mixture:
        mx = res.mixture
        console.print(
            f"mixture ({'recommended' if mx.recommended else 'not recommended'}): "
            + ", ".join(f"{n} x{w:.2f}" for n, w in zip(mx.names, mx.weights, strict=True))
            + f"  mmd {mx.mmd:.4f} vs best single {mx.best_single_mmd:.4f} "
            f"({mx.improvement:.0%} lower MMD^2)"
        )
    for line in res.explanation:
        console.print(f"[dim]- {line}[/]", highlight=False)
