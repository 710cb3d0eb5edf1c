"""``learndock login/logout/upload/status/search/download``: one command line for a dock and the
local market.

Where a command acts:

* ``--url URL`` -- the dock at URL over HTTP (with the token ``learndock login`` saved for it,
  if any);
* ``--local``, ``--home`` or ``--database-url`` -- the local market (``$LEARNDOCK_HOME`` or
  ``~/.learndock`` unless ``--home``);
* neither -- the dock of the last ``learndock login`` if there is one, else the local market.

``learndock market add``, ``market search`` and ``market download`` are aliases of ``upload``,
``search`` and ``download`` (one implementation, registered under both names; see
:mod:`learndock.cli.market_cmd`). ``--json`` output has the same fields locally and remotely.

Credentials: ``learndock login`` writes ``$XDG_CONFIG_HOME/learndock/credentials.json``
(default ``~/.config/learndock/``), mode 0600 in a 0700 folder: per dock URL its token, the
account's e-mail and whether the token came from a password login (``learndock logout`` revokes
those on the dock) or was given with ``--token`` (logout only forgets it here). The token is never
printed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from learndock.cli import vocab
from learndock.cli.main import _load_semantic, check_home, console, emit_json, err
from learndock.errors import LearndockError

CREDENTIALS_FILE = "credentials.json"
API_SUFFIX = "/api/v1"

UrlOpt = Annotated[str | None, typer.Option(
    "--url", help="The dock's URL, e.g. http://127.0.0.1:8000 (default: the last `learndock "
                  "login`, else the local market).", show_default=False)]
LocalOpt = Annotated[bool, typer.Option(
    "--local", help="Use the local market even when logged in to a dock.")]
HomeOpt = Annotated[Path | None, typer.Option(
    "--home", help="Local market directory (default $LEARNDOCK_HOME or ~/.learndock); implies "
                   "--local.", show_default=False)]
DbOpt = Annotated[str | None, typer.Option(
    "--database-url", help="Local market's SQLAlchemy URL (default SQLite in --home); implies "
                           "--local.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def fail(msg: str, code: int = 1) -> None:
    """``main.fail`` for text that may hold brackets (server messages, check logs); long lines
    are left to the terminal to wrap (URLs and commands in them stay copyable)."""
    err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# ---------------------------------------------------------------------- credentials
def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "learndock" / CREDENTIALS_FILE


def normalise_url(url: str) -> str:
    u = url.strip().rstrip("/")
    if u.endswith(API_SUFFIX):
        u = u[: -len(API_SUFFIX)].rstrip("/")
    if "://" not in u:
        fail(f"--url must start with http:// or https://, not {url!r}")
    return u


def load_credentials() -> dict[str, Any]:
    """``{"default": url | None, "docks": {url: {...}}}`` (empty if there is no file)."""
    path = credentials_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"default": None, "docks": {}}
    except (OSError, ValueError) as exc:
        fail(f"cannot read saved credentials {path}: {exc} (remove it, then log in again)")
    if not isinstance(data, dict) or not isinstance(data.get("docks"), dict):
        fail(f"saved credentials {path} are not in the expected format (remove it, then log "
             "in again)")
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o077:
            err.print(f"[yellow]warning:[/] {escape(str(path))} is readable by other users; "
                      "it is made 0600 on the next login", highlight=False)
    return data


def save_credentials(data: dict[str, Any]) -> Path:
    """Write the file atomically with mode 0600 (the folder 0700); remove it when empty."""
    path = credentials_path()
    if not data.get("docks"):
        path.unlink(missing_ok=True)
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".credentials-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(path, 0o600)
    return path


# ---------------------------------------------------------------------- where a command acts
@dataclass
class Target:
    url: str | None = None  # None: the local market
    token: str | None = None
    home: Path | None = None
    database_url: str | None = None

    @property
    def remote(self) -> bool:
        return self.url is not None

    def client(self, as_json: bool = False) -> Any:
        from learndock.client import Client

        assert self.url is not None
        return Client(self.url, self.token, progress=False if as_json else None)

    def market(self) -> Any:
        from learndock.market import Market

        check_home(self.home)
        return Market(self.home, database_url=self.database_url)


def resolve_target(url: str | None, local: bool, home: Path | None,
                   database_url: str | None) -> Target:
    """``--url`` > ``--local``/``--home``/``--database-url`` > saved login > local market."""
    if url is not None:
        if local or home is not None or database_url is not None:
            fail("--url names a dock; --local, --home and --database-url name the local market: "
                 "give one or the other")
        base = normalise_url(url)
        entry = load_credentials()["docks"].get(base) or {}
        return Target(url=base, token=entry.get("token"))
    if local or home is not None or database_url is not None:
        return Target(home=home, database_url=database_url)
    creds = load_credentials()
    default = creds.get("default")
    entry = creds["docks"].get(default) if default else None
    if entry:
        return Target(url=default, token=entry.get("token"))
    return Target(home=home, database_url=database_url)


@contextlib.contextmanager
def dock_errors(target: Target) -> Iterator[None]:
    """Errors as one clear line each (no traceback), with what to do about them."""
    import httpx

    from learndock.server.errors import (
        ApiError,
        AuthenticationError,
        ForbiddenError,
        PackageRejectedError,
        RateLimitedError,
        ServiceUnavailableError,
    )

    where = f"the dock at {target.url}" if target.remote else "the local market"
    login = f"learndock login --url {target.url}"
    try:
        yield
    except AuthenticationError as exc:
        if target.token:
            fail(f"{where} refused the saved token (401: {exc}); log in again: {login}")
        fail(f"{where} needs an account for this (401: {exc}); log in first: {login}")
    except ForbiddenError as exc:
        fail(f"{where} refused: {exc} (403)")
    except RateLimitedError as exc:
        fail(f"{where} is rate-limiting this client (429: {exc}); retry in "
             f"{exc.retry_after} s")
    except PackageRejectedError as exc:  # the package could not be read (nothing stored)
        log = _report_text(exc.details) if isinstance(exc.details, dict) else ""
        fail(f"{where} refused the upload: {exc}" + (f"\n{log}" if log else ""))
    except ServiceUnavailableError as exc:
        hint = (" -- is the dock running there? (change it with --url, or --local for the "
                "local market)") if "cannot reach" in str(exc) else ""
        fail(f"{exc}{hint}")
    except ApiError as exc:
        fail(f"{where} answered {exc.status}: {exc}")
    except LearndockError as exc:
        fail(str(exc))
    except httpx.HTTPError as exc:
        fail(f"cannot talk to {where}: {type(exc).__name__}: {exc}")
    except TimeoutError as exc:
        fail(str(exc))
    except OSError as exc:  # a file that cannot be read or written here
        fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))


def _report_text(report: dict[str, Any] | None) -> str:
    """A check report (``CheckReport.to_dict``) as ``CheckReport.text`` prints it."""
    if not report or not isinstance(report.get("checks"), list):
        return ""
    lines = [f"[{'ok' if c.get('ok') else 'FAIL'}] {c.get('name')}: {c.get('message')}"
             for c in report["checks"] if isinstance(c, dict)]
    if "ok" in report:
        lines.append("accepted" if report["ok"] else "rejected")
    return "\n".join(lines)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _api_state(status: str) -> str:
    from learndock.server.models import api_state

    return api_state(status)


def _print_plain(text: str) -> None:
    console.print(text, markup=False, highlight=False)


# ---------------------------------------------------------------------- login / logout
def login(
    url: Annotated[str | None, typer.Option(
        "--url", help="The dock's URL (default: the one you logged in to last).",
        show_default=False)] = None,
    email: Annotated[str | None, typer.Option(
        "--email", help="Your account's e-mail address (asked if not given).",
        show_default=False)] = None,
    token: Annotated[str | None, typer.Option(
        "--token", help="Save this API token (from `learndock tokens create` or POST "
                        "/api/v1/tokens) instead of logging in with a password; '-' reads it "
                        "from stdin.", show_default=False)] = None,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from the first line of stdin.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Log in to a dock and save its URL and token (mode 0600) for later commands."""
    from learndock.client import Client

    creds = load_credentials()
    if url is None:
        url = creds.get("default")
        if not url:
            fail("which dock? give --url, e.g. --url http://127.0.0.1:8000")
    base = normalise_url(str(url))
    if token is not None and password_stdin:
        fail("give --token or --password-stdin, not both")
    from learndock.server.errors import AuthenticationError

    target = Target(url=base)
    client = Client(base, progress=False)
    kind = "token"
    with dock_errors(target):
        try:
            if token is not None:
                secret = sys.stdin.readline().strip() if token == "-" else token.strip()
                if not secret:
                    fail("the token is empty")
                client.token = secret
                me = client.me()  # checks the token: a wrong one is a 401 here, not later
            else:
                if email is None:
                    if password_stdin or not sys.stdin.isatty():
                        fail("give --email (and the password with --password-stdin, or an API "
                             "token with --token) when not on a terminal")
                    email = str(typer.prompt("e-mail"))
                if not password_stdin and not sys.stdin.isatty():
                    fail("not on a terminal: pipe the password with --password-stdin, or give "
                         "an API token with --token")
                password = (sys.stdin.readline().rstrip("\r\n") if password_stdin
                            else str(typer.prompt("password", hide_input=True)))
                secret = client.login(email, password)
                kind = "login"
                me = client.me()
        except AuthenticationError as exc:
            what = "this token" if token is not None else "the login"
            fail(f"the dock at {base} refused {what} (401: {exc}); nothing was saved")
    client.close()
    creds["docks"][base] = {"token": secret, "email": me.email, "role": me.role, "kind": kind,
                            "saved_at": time.time()}
    creds["default"] = base
    path = save_credentials(creds)
    if as_json:
        emit_json({"url": base, "email": me.email, "role": me.role, "kind": kind,
                   "credentials": str(path)})
    else:
        console.print(f"logged in to {base} as {me.email} ({me.role}); credentials saved in "
                      f"{path} (mode 0600)", highlight=False, markup=False)


def logout(
    url: Annotated[str | None, typer.Option(
        "--url", help="The dock to log out of (default: the last one logged in to).",
        show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Forget the saved token (and revoke it on the dock if it came from a password login)."""
    from learndock.client import Client

    creds = load_credentials()
    base = normalise_url(url) if url else creds.get("default")
    entry = creds["docks"].get(base) if base else None
    if not entry:
        if as_json:
            emit_json({"url": base, "logged_out": False, "revoked": False})
        else:
            console.print(f"not logged in{f' to {base}' if base else ''}", highlight=False,
                          markup=False)
        return
    revoked = False
    if entry.get("kind") == "login":
        try:
            with Client(base, entry.get("token"), progress=False, retries=1) as c:
                c.logout()
            revoked = True
        except Exception as exc:  # noqa: BLE001 -- forget it here whatever the dock says
            err.print(f"[yellow]warning:[/] could not revoke the token on {escape(str(base))} "
                      f"({escape(str(exc))}); forgetting it here", highlight=False)
    del creds["docks"][base]
    if creds.get("default") == base:
        creds["default"] = next(iter(creds["docks"]), None)
    path = save_credentials(creds)
    if as_json:
        emit_json({"url": base, "logged_out": True, "revoked": revoked})
    else:
        console.print(f"logged out of {base}" + (" (token revoked)" if revoked else "")
                      + ("" if path.exists() else f"; removed {path}"),
                      highlight=False, markup=False)


# ---------------------------------------------------------------------- upload
def _upload_remote(target: Target, package: Path, learnware: str | None, owner: str | None,
                   semantic: Any, wait: bool, timeout: float, as_json: bool) -> int:
    if owner is not None:
        fail("--owner is for the local market; a dock records the account that uploads")
    with contextlib.ExitStack() as stack:
        path = package
        if package.is_dir():  # a package folder: zip it as `learndock pack` would
            from learndock.package import pack

            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="learndock-")))
            path = tmp / f"{package.name or 'package'}.zip"
            with dock_errors(target):
                pack(package, path, semantic=semantic)
        client = stack.enter_context(target.client(as_json))
        with dock_errors(target):
            sub = client.upload(path, learnware_id=learnware, semantic=semantic)
            report = sub.report
            state = sub.state
            if not as_json:
                console.print(f"uploaded {package.name} to {target.url}: learnware {sub.learnware_id}"
                              f" version {sub.version}, {state} (job {sub.job_id})",
                              highlight=False, markup=False)
            if wait and state not in ("published", "rejected", "failed"):
                ctx = (contextlib.nullcontext() if as_json else
                       err.status(f"verifying {sub.learnware_id} v{sub.version}..."))
                with ctx:
                    v = client.wait(sub.learnware_id, sub.version, timeout=timeout)
                state, report = v.state, v.report or report
                if v.job is not None and v.job.last_error and state == "failed":
                    report = {**(report or {}), "error": v.job.last_error}
    from learndock.market.types import ACCEPTED

    status = ACCEPTED if state == "published" else state
    if as_json:
        emit_json({"learnware_id": sub.learnware_id, "version": sub.version, "status": status,
                   "state": state, "stored": True, "island": None, "report": report,
                   "job_id": sub.job_id, "package_sha256": sub.package_sha256,
                   "url": target.url})
    else:
        if wait:
            _print_plain(_report_text(report))
            if report and report.get("error"):
                _print_plain(f"error: {report['error']}")
            console.print(f"learnware [bold]{sub.learnware_id}[/] version {sub.version}: {state}",
                          highlight=False)
        else:
            console.print(f"follow it with: learndock status {sub.learnware_id} --url "
                          f"{target.url}", highlight=False, markup=False)
    return 1 if state in ("rejected", "failed") else 0


def _upload_local(target: Target, package: Path, learnware: str | None, owner: str | None,
                  semantic: Any, as_json: bool) -> int:
    from learndock.market import RejectedError

    m = target.market()
    try:
        with dock_errors(target):
            try:
                r = (m.update(learnware, package, semantic=semantic) if learnware
                     else m.add(package, owner=owner, semantic=semantic))
            except RejectedError as exc:
                if as_json:
                    emit_json({"status": "rejected", "state": "rejected", "stored": False,
                               "message": str(exc), "report": exc.report.to_dict()})
                else:
                    _print_plain(exc.report.text())
                return 1
    finally:
        m.close()
    if as_json:
        emit_json({"learnware_id": r.learnware_id, "version": r.version, "status": r.status,
                   "state": _api_state(r.status), "stored": True, "island": r.island,
                   "report": r.report.to_dict(), "job_id": None,
                   "package_sha256": r.package_sha256, "url": None})
    else:
        _print_plain(r.report.text())
        console.print(f"learnware [bold]{r.learnware_id}[/] version {r.version}: {r.status}",
                      highlight=False)
    return 0 if r.accepted else 1


def upload(
    package: Annotated[Path, typer.Argument(help="Package zip (or package directory).")],
    url: UrlOpt = None,
    learnware: Annotated[str | None, typer.Option(
        "--learnware", "--update", help="Upload as a new version of this learnware (yours).",
        show_default=False)] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="On a dock: return when its checks are done (published, rejected or "
                       "failed) and print the check log. The local market checks at once.")] =
    False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 600.0,
    semantic: Annotated[Path | None, typer.Option(
        help="Semantic spec JSON (reference-format zips that carry none).",
        show_default=False)] = None,
    owner: Annotated[str | None, typer.Option(
        help="Owner name to record (local market only).", show_default=False)] = None,
    local: LocalOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a learnware (or a new version of one) to a dock, or add it to the local market.

    On a dock the upload is queued for verification (--wait to wait for the verdict); the local
    market checks it at once. Exit code 1 if it is refused or rejected (with the check log).
    """
    target = resolve_target(url, local, home, database_url)
    if not package.exists():
        fail(f"no package at {package}")
    sem = _load_semantic(semantic)
    if target.remote:
        code = _upload_remote(target, package, learnware, owner, sem, wait, timeout, as_json)
    else:
        code = _upload_local(target, package, learnware, owner, sem, as_json)
    if code:
        raise typer.Exit(code)


# ---------------------------------------------------------------------- status
def _local_status(target: Target, learnware_id: str) -> dict[str, Any]:
    m = target.market()
    try:
        info = m.get(learnware_id)
        versions = m.versions(learnware_id)
        jobs = {j.version_id: j for j in m.jobs.for_learnware(learnware_id)}
    finally:
        m.close()
    out_versions = []
    for v in versions:
        job = jobs.get(v.version_id or "")
        out_versions.append({
            "number": v.number, "semver": v.semver, "state": _api_state(v.status),
            "current": v.current, "package_sha256": v.package_sha256,
            "size_bytes": v.size_bytes, "created_at": v.created_at,
            "verified_at": v.verified_at, "available": v.available, "report": v.report,
            "job": None if job is None else {k: getattr(job, k) for k in (
                "id", "state", "attempts", "max_attempts", "worker", "claimed_at",
                "lease_expires_at", "created_at", "finished_at", "last_error")},
        })
    state = "published" if info.current_version is not None else _api_state(info.status)
    return {"learnware_id": info.id, "state": state, "current_version": info.current_version,
            "latest_version": info.latest_version, "versions": out_versions}


def status(
    learnware_id: Annotated[str, typer.Argument(help="The learnware's id.")],
    url: UrlOpt = None,
    local: LocalOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verification state of each version of your learnware, with its check log."""
    target = resolve_target(url, local, home, database_url)
    with dock_errors(target):
        if target.remote:
            with target.client(as_json) as client:
                st = client.status(learnware_id).model_dump(mode="json")
        else:
            st = _local_status(target, learnware_id)
    if as_json:
        emit_json(st)
        return
    console.print(f"learnware {st['learnware_id']}: {st['state']} (current version "
                  f"{st['current_version'] or '-'}, latest {st['latest_version']})",
                  highlight=False, markup=False)
    t = Table()
    for col in ("#", "semver", "state", "current", "sha256", "job"):
        t.add_column(col, overflow="fold")
    for v in st["versions"]:
        job = v.get("job")
        t.add_row(str(v["number"]), escape(v["semver"]), v["state"],
                  "yes" if v["current"] else "", v["package_sha256"][:16],
                  "-" if not job else f"{job['state']} ({job['attempts']}/{job['max_attempts']})")
    console.print(t)
    for v in st["versions"]:
        text = _report_text(v.get("report"))
        if text:
            console.print(f"[bold]version {v['number']} check log[/]")
            _print_plain(text)
        job = v.get("job")
        if job and job.get("last_error"):
            _print_plain(f"version {v['number']} job error: {job['last_error']}")


# ---------------------------------------------------------------------- search
def search(
    text: Annotated[str | None, typer.Option(help="Free text: what your task is about.")] = None,
    spec: Annotated[Path | None, typer.Option(
        help="Your RKME spec JSON (learndock spec table/image/text).")] = None,
    data_type: Annotated[str | None, typer.Option(
        help=vocab.choices("data_type"), show_default=False)] = None,
    task_type: Annotated[str | None, typer.Option(
        help=vocab.choices("task_type"), show_default=False)] = None,
    library_type: Annotated[str | None, typer.Option(
        help=vocab.choices("library_type"), show_default=False)] = None,
    scenario: Annotated[list[str] | None, typer.Option(
        help=vocab.choices("scenarios", "Scenario tag (repeatable)."), show_default=False)] = None,
    license: Annotated[str | None, typer.Option(
        help=vocab.choices("license"), show_default=False)] = None,
    top_k: Annotated[int, typer.Option(help="How many single results.")] = 10,
    max_mixture: Annotated[int, typer.Option(help="Most learnwares in a mixture.")] = 5,
    target_description: Annotated[str | None, typer.Option(
        "--target-description", help="What you want predicted (tells learnwares of other "
        "feature spaces that do another task apart).", show_default=False)] = None,
    url: UrlOpt = None,
    local: LocalOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search by tags and text and/or by your data's spec (on a dock or the local market).
    A table spec that carries column descriptions (`learndock spec table`) also finds
    learnwares of other feature spaces."""
    from learndock.config import ArchiveLimits
    from learndock.spec.io import load_stat_spec
    from learndock.spec.table import column_descriptions

    target = resolve_target(url, local, home, database_url)
    q: dict[str, Any] = {k: v for k, v in {
        "data_type": data_type, "task_type": task_type, "library_type": library_type,
        "scenarios": scenario, "license": license, "text": text,
        "target_description": target_description}.items() if v}

    def described(user_spec: Any) -> dict[str, Any]:
        descs = column_descriptions(user_spec) if user_spec is not None else []
        return {**q, "input_descriptions": descs} if descs else q

    with dock_errors(target):
        if target.remote:
            # A user spec is read under the search-side caps before anything is sent.
            user_spec = (load_stat_spec(spec, ArchiveLimits(), user=True)
                         if spec is not None else None)
            q = described(user_spec)
            with target.client(as_json) as client:
                res = client.search(q or None, spec=user_spec, top_k=top_k,
                                    max_mixture=max_mixture)
        else:
            m = target.market()
            try:
                user_spec = load_stat_spec(spec, m.limits, user=True) if spec is not None else None
                q = described(user_spec)
                res = m.search(q or None, spec=user_spec, top_k=top_k, max_mixture=max_mixture)
            finally:
                m.close()
    if as_json:
        emit_json(res.to_dict())
        return
    _print_search(res)


def _print_search(res: Any) -> None:
    """The ranking with every number explained under it (scores mean nothing bare)."""
    from rich import box

    has_spec = any(s.score is not None for s in res.single)
    has_text = any(s.text_rank is not None for s in res.single)
    best_text = max((s.text_rank for s in res.single if s.text_rank is not None), default=None)
    t = Table(title=f"{len(res.single)} learnware(s)", box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("#", justify="right")
    t.add_column("id", no_wrap=True)
    t.add_column("name", no_wrap=True, overflow="ellipsis", max_width=28)
    t.add_column("v", justify="right")
    if has_spec:
        t.add_column("match", justify="right")
    if has_text:
        t.add_column("text", justify="right")
    for r, s in enumerate(res.single, 1):
        row = [str(r), s.learnware_id, escape(s.name), str(s.version)]
        if has_spec:
            row.append("-" if s.score is None else f"{s.score:.3f}")
        if has_text:
            row.append("-" if s.text_rank is None or not best_text
                       else f"{s.text_rank / best_text:.2f}")
        t.add_row(*row)
    if res.single or not res.cross_island:  # an empty table says nothing next to the others
        console.print(t)
    if has_spec:
        _print_plain("match: how well the learnware's training data fit yours, "
                     "1 - MMD^2 / (|yours|^2 + |its|^2) in the island's kernel: 1 = the same "
                     "distribution, 0 = no overlap")
    if has_text:
        _print_plain("text: full-text relevance of name + description to --text, relative "
                     "to the best text match (1.00)")
    if res.mixture:
        mx = res.mixture
        members = ", ".join(f"{n} x{w:.2f}" for n, w in zip(mx.names, mx.weights, strict=True))
        if mx.improvement >= 0.005:
            gain = f"{mx.improvement:.0%} lower MMD^2 than the best single learnware"
        else:
            gain = "no closer to your data than the best single learnware"
        verdict = ("recommended: reuse them together (learndock reuse does)" if mx.recommended
                   else "not recommended: a mixture must cut MMD^2 by 20% or more")
        _print_plain(f"mixture of {members}: {gain}; {verdict}")
    if res.cross_island:
        _print_cross_island(res.cross_island)
    for line in res.explanation:
        console.print(f"[dim]- {escape(line)}[/]", highlight=False)


def _print_cross_island(matches: list[Any]) -> None:
    """Learnwares of other feature spaces: their own table (their scores are not MMD)."""
    from rich import box

    t = Table(title=f"{len(matches)} learnware(s) from other feature spaces",
              box=box.SIMPLE_HEAD, pad_edge=False)
    for col, kw in (("#", {"justify": "right"}), ("id", {"no_wrap": True}),
                    ("name", {"no_wrap": True, "overflow": "ellipsis", "max_width": 28}),
                    ("v", {"justify": "right"}), ("score", {"justify": "right"}),
                    ("verdict", {"no_wrap": True}), ("shared", {"justify": "right"})):
        t.add_column(col, **kw)
    for r, c in enumerate(matches, 1):
        t.add_row(str(r), c.learnware_id, escape(c.name), str(c.version), f"{c.score:.3f}",
                  c.verdict, f"{c.shared_features}/{c.input_dimension}")
    console.print(t)
    _print_plain("score: your columns read in the system space (one coordinate system for "
                 "every feature space) against the learnware's, x the share of its inputs you "
                 "supply; 1 = the same data, every input shared. shared: its inputs bridged "
                 "from your columns (the rest are imputed from its spec)")


# ---------------------------------------------------------------------- download
def download(
    learnware_id: Annotated[str, typer.Argument(help="The learnware's id.")],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Zip file to write (*.zip), or a directory to write "
                               "<id>-v<version>.zip into, made if needed (default: the "
                               "current directory).",
        show_default=False)] = None,
    version: Annotated[int | None, typer.Option(
        help="Version number (default: the current published one).", show_default=False)] =
    None,
    url: UrlOpt = None,
    local: LocalOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a learnware's package zip (checked against its SHA-256)."""
    target = resolve_target(url, local, home, database_url)
    dest = output if output is not None else Path.cwd()
    if not dest.is_dir() and dest.suffix.lower() != ".zip":  # a folder to make
        dest.mkdir(parents=True, exist_ok=True)
    elif not dest.is_dir() and not dest.parent.is_dir():
        fail(f"no folder {dest.parent} to write {dest.name} into")
    with dock_errors(target):
        if target.remote:
            with target.client(as_json) as client:
                number = version
                if number is None:  # the current published version, named in the file
                    number = next((v.number for v in client.versions(learnware_id)
                                   if v.current), None)
                    if number is None:
                        fail(f"learnware {learnware_id!r} has no published version")
                path = client.download(learnware_id, dest, number)
        else:
            m = target.market()
            try:
                number = version
                if number is None:
                    number = m.get(learnware_id).current_version
                    if number is None:
                        fail(f"learnware {learnware_id!r} has no published version")
                if dest.is_dir():
                    dest = dest / f"{learnware_id}-v{number}.zip"
                path = m.download(learnware_id, dest, number)
            finally:
                m.close()
    path = Path(path)
    info = {"learnware_id": learnware_id, "version": number, "path": str(path),
            "sha256": _sha256_file(path), "size_bytes": path.stat().st_size,
            "url": target.url}
    if as_json:
        emit_json(info)
    else:
        console.print(f"wrote {path}", highlight=False, markup=False)


# ---------------------------------------------------------------------- island kernels
def island_kernel_doc(target: Target, island: str, as_json: bool = True) -> dict[str, Any]:
    """The island's kernel file (``{"island", "kernel_version", "kernel", "history"}``) from
    the local market or the dock ``target`` names."""
    with dock_errors(target):
        if target.remote:
            with target.client(as_json) as client:
                return client.island_kernel(island)
        m = target.market()
        try:
            return m.island_kernel(island).to_dict()
        finally:
            m.close()


# ---------------------------------------------------------------------- registration
COMMANDS = {"login": login, "logout": logout, "upload": upload, "status": status,
            "search": search, "download": download}


def register(main_app: typer.Typer) -> None:
    """Add ``login``, ``logout``, ``upload``, ``status``, ``search`` and ``download`` to the
    main ``learndock`` app (once)."""
    have = {c.name for c in main_app.registered_commands}
    for name, fn in COMMANDS.items():
        if name not in have:
            main_app.command(name)(fn)
