"""``learndock serve``, ``learndock worker``, ``learndock users ...``, ``learndock tokens ...``.

The dock server and its operator commands. ``app`` holds them all (tests drive it with typer's
``CliRunner``); :func:`register` adds the same commands to the main ``learndock`` command.
Heavy imports (FastAPI, uvicorn, the market) happen inside the commands.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

app = typer.Typer(help="The learndock dock server and its operator commands.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
users_app = typer.Typer(help="Dock accounts (operator commands, on the dock's database).",
                        no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (operator commands, on the dock's database).",
                         no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")

console = Console()
err = Console(stderr=True)

HomeOpt = Annotated[Path | None, typer.Option(
    "--home", help="Dock home (default: LEARNDOCK_HOME or ~/.learndock).")]
DbOpt = Annotated[str | None, typer.Option(
    "--database-url", help="SQLAlchemy URL (default: SQLite in the home).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="Settings file of LEARNDOCK_*=value lines (default: LEARNDOCK_CONFIG); "
                     "the environment wins over it.")]
QueueUrlOpt = Annotated[str | None, typer.Option(
    "--queue-url", help="redis://HOST:PORT/DB: verification through RQ on that Redis "
                        "(default: LEARNDOCK_QUEUE_URL; none: threads and the database).")]


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _fail(msg: str, code: int = 1) -> None:
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _market(home: Path | None, database_url: str | None) -> Any:
    """The dock's market, from the same settings as the server (LEARNDOCK_CONFIG included)."""
    from learndock.server.settings import ServerSettings

    _check_home(home)
    return ServerSettings.load(home=home, database_url=database_url).open_market()


def _accounts(market: Any) -> Any:
    from learndock.server.accounts import AccountStore
    from learndock.server.security import Passwords
    from learndock.server.settings import ServerSettings

    s = ServerSettings()
    return AccountStore(market.engine,
                        Passwords(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism),
                        token_ttl_days=s.token_ttl_days,
                        login_token_ttl_days=s.login_token_ttl_days)


@contextlib.contextmanager
def _account_store(home: Path | None, database_url: str | None) -> Iterator[Any]:
    """The dock's accounts for one operator command: a refusal (unknown e-mail, weak password,
    ...) is one error line and exit 1; the market is closed either way."""
    from learndock.errors import LearndockError

    market = _market(home, database_url)
    try:
        yield _accounts(market)
    except LearndockError as exc:
        _fail(str(exc))
    finally:
        market.close()


def _check_home(home: Path | None) -> None:
    if home is not None and home.exists() and not home.is_dir():
        _fail(f"--home {home} is a file; a dock home is a folder (made if it does not exist)")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- serve / worker
@app.command()
def serve(
    home: HomeOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] =
    "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 8000,
    demo: Annotated[bool, typer.Option(
        "--demo", help="Serve the demo market (built from real data in the background, "
                       "cached; home defaults to ~/.learndock/demo).")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="With --demo: a smaller market.")] =
    False,
    workers: Annotated[int | None, typer.Option(
        help="Verification worker threads in this process (0: run `learndock worker` "
             "elsewhere; none with a Redis queue) [default: 1].")] = None,
    database_url: DbOpt = None,
    queue_url: QueueUrlOpt = None,
    config: ConfigOpt = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the dock: the web UI (/), the HTTP API (/api/v1, docs at /api/v1/docs) and
    verification workers."""
    import uvicorn

    from learndock.config import Settings
    from learndock.errors import LearndockError
    from learndock.server import ServerSettings, create_app

    if demo and home is None:
        home = Settings().home / "demo"
    _check_home(home)
    if workers is not None and workers < 0:
        _fail("--workers must be >= 0")
    kw: dict[str, Any] = {"host": host, "port": port, "workers": workers, "demo": demo,
                          "demo_quick": quick, "home": home, "database_url": database_url,
                          "queue_url": queue_url}
    try:
        settings = ServerSettings.load(config, **kw)
        application = create_app(settings)
    except (LearndockError, ValueError) as exc:
        _fail(str(exc))
    dock = application.state.dock
    from learndock.server.settings import backends_line, describe_backends

    verification = ("none here: `learndock worker` processes consume the Redis queue"
                    if settings.queue_url else f"{settings.workers} thread(s) in this process")
    if port == 0:
        port = _free_port(host)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    lines = [f"learndock dock at {url}  (web UI; API docs: {url}/api/v1/docs)",
             f"home: {settings.resolved_home}  verification: {verification}",
             backends_line(describe_backends(dock.market, dock.queue))]
    if demo:
        lines.append("demo market: building in the background (browse and search without an "
                     f"account; progress at {url}/api/v1/health)")
    if not dock.accounts.count_users().get("admin"):
        home_arg = f" --home {settings.resolved_home}" if home is not None else ""
        lines += ["no admin account yet -- create the first one with:",
                  f"  learndock users create you@example.org --admin{home_arg}"]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    uvicorn.run(application, host=host, port=port, log_level=log_level)


@app.command()
def worker(
    home: HomeOpt = None,
    database_url: DbOpt = None,
    workers: Annotated[int, typer.Option(help="Worker threads (polling the database; with a "
                                              "Redis queue: one per process).")] = 1,
    lease: Annotated[float | None, typer.Option(
        help="Lease seconds, renewed while a job runs [default: LEARNDOCK_SERVER_LEASE_S or "
             "60].")] = None,
    once: Annotated[bool, typer.Option("--once", help="Run the queued jobs (from the "
                                                      "database), then exit.")] = False,
    queue_url: QueueUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run verification workers only, against the dock's database (several may run, on any
    node sharing the database and blob store). With a Redis queue (--queue-url or
    LEARNDOCK_QUEUE_URL) this process consumes it with RQ and reaps expired leases every
    LEARNDOCK_SERVER_REAP_INTERVAL_S."""
    from learndock.errors import LearndockError
    from learndock.market.jobs import worker_name
    from learndock.market.verification import ThreadQueue, Verifier
    from learndock.server.settings import ServerSettings, backends_line, describe_backends

    _check_home(home)
    try:
        settings = ServerSettings.load(config, home=home, database_url=database_url,
                                       queue_url=queue_url, lease_s=lease)
        market = settings.open_market()
    except (LearndockError, ValueError) as exc:
        _fail(str(exc))
    lease = settings.lease_s
    try:
        if settings.queue_url and not once:
            if workers != 1:
                _fail("with a Redis queue a worker process runs one job at a time: start "
                      "several `learndock worker` processes instead of --workers")
            from learndock.market.redis_queue import RedisQueue, run_worker

            rqueue = RedisQueue(settings.queue_url, settings.queue_name,
                                job_timeout_s=settings.job_timeout_s,
                                requeue_after_s=settings.requeue_after_s)
            console.print(f"verification worker (RQ, lease {lease:g} s, reaper every "
                          f"{settings.reap_interval_s:g} s); Ctrl-C to stop", highlight=False)
            sys.stdout.write(backends_line(describe_backends(market, rqueue)) + "\n")
            sys.stdout.flush()
            try:
                run_worker(market, rqueue, lease_s=lease,
                           reap_interval_s=settings.reap_interval_s)
            finally:
                rqueue.stop()
            return
        if once:
            verifier = Verifier(market, worker_name("cli"), lease)
            done = []
            while True:
                claimed, result = verifier.step()
                if not claimed:
                    break
                if result is not None:
                    done.append({"learnware_id": result.learnware_id, "version": result.version,
                                 "status": result.status})
            if as_json:
                _emit({"processed": done})
            else:
                for d in done:
                    console.print(f"{d['learnware_id']} v{d['version']}: {d['status']}")
                console.print(f"{len(done)} job(s) done")
            return
        queue = ThreadQueue(market, workers, lease_s=lease)
        queue.start()
        console.print(f"{workers} verification worker(s) polling the database; Ctrl-C to stop")
        sys.stdout.write(backends_line(describe_backends(market, queue)) + "\n")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            queue.stop(timeout=lease)
    finally:
        market.close()


# ---------------------------------------------------------------------- users
def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        _fail("not on a terminal: pipe the password with --password-stdin")
    return str(typer.prompt("password", hide_input=True, confirmation_prompt=True))


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="The account's e-mail address.")],
    admin: Annotated[bool, typer.Option("--admin", help="Make it an admin.")] = False,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from the first line of stdin.")] = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an account (the first admin of a dock is made this way: there is no default)."""
    password = _read_password(password_stdin)
    with _account_store(home, database_url) as accounts:
        user = accounts.create_user(email, password, "admin" if admin else "user")
    if as_json:
        _emit(user.to_dict())
    else:
        console.print(f"created {user.role} {user.email} (id {user.id})", highlight=False)


@users_app.command("list")
def users_list(home: HomeOpt = None, database_url: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List accounts (no secrets)."""
    with _account_store(home, database_url) as accounts:
        users, _ = accounts.list_users(0, 10_000)
    if as_json:
        _emit([u.to_dict() for u in users])
    else:
        for u in users:
            console.print(f"{u.id}  {u.role:5}  {u.email}", highlight=False)


# ---------------------------------------------------------------------- tokens
@tokens_app.command("create")
def tokens_create(
    email: Annotated[str, typer.Argument(help="Whose token.")],
    name: Annotated[str, typer.Option(help="A name to recognise it by.")] = "cli",
    expires_days: Annotated[float | None, typer.Option(
        help="Lifetime in days (default: LEARNDOCK_SERVER_TOKEN_TTL_DAYS, 90).")] = None,
    home: HomeOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token and print it -- once: only its hash is kept."""
    with _account_store(home, database_url) as accounts:
        new = accounts.create_token(accounts.find_user(email).id, name, kind="api",
                                    ttl_days=expires_days)
    if as_json:
        _emit({**new.token.to_dict(), "token": new.secret})
    else:
        console.print(f"token {new.token.id} for {email} (expires "
                      f"{time.strftime('%Y-%m-%d', time.gmtime(new.token.expires_at))}); "
                      "shown once:", highlight=False)
        sys.stdout.write(new.secret + "\n")


@tokens_app.command("list")
def tokens_list(
    email: Annotated[str, typer.Argument(help="Whose tokens.")],
    home: HomeOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """An account's live tokens (ids and prefixes, no secrets)."""
    with _account_store(home, database_url) as accounts:
        tokens = accounts.list_tokens(accounts.find_user(email).id)
    if as_json:
        _emit([t.to_dict() for t in tokens])
    else:
        for t in tokens:
            console.print(f"{t.id}  {t.prefix}...  {t.kind:5}  {t.name}", highlight=False)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (not its secret).")],
    home: HomeOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token: requests carrying it get 401 from now on."""
    with _account_store(home, database_url) as accounts:
        tok = accounts.revoke_token(token_id)
    if as_json:
        _emit(tok.to_dict())
    else:
        console.print(f"revoked token {tok.id}", highlight=False)


def register(main_app: typer.Typer) -> None:
    """Add ``serve``, ``worker``, ``users`` and ``tokens`` to the main ``learndock`` app."""
    if any(c.name == "serve" for c in main_app.registered_commands):
        return
    main_app.command("serve")(serve)
    main_app.command("worker")(worker)
    main_app.add_typer(users_app, name="users")
    main_app.add_typer(tokens_app, name="tokens")
