"""The web UI's pages: server-rendered Jinja2 over the same functions the API routes call.

Every page handler resolves the caller from the session cookie, then calls the API's own
route functions (``learndock.server.routes.*``) or the account store with that caller, so
permissions, validation and errors are the API's. A :class:`LearndockError` becomes the page
again with the message (or an error page) and the API's status code.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from learndock.errors import LearndockError
from learndock.server.deps import Dock, Principal
from learndock.server.errors import (
    ApiNotFoundError,
    AuthenticationError,
    ForbiddenError,
    ValidationFailedError,
    describe,
)
from learndock.server.models import ID_PATTERN
from learndock.server.security import read_signing_key
from learndock.spec.semantic import DataType, LibraryType, License, Scenario, TaskType
from learndock.web import plots
from learndock.web.security import COOKIE, COOKIE_MAX_AGE, SecurityHeaders, Session

HERE = Path(__file__).parent
_ID = re.compile(ID_PATTERN)
#: Web paths whose bodies are package uploads, streamed by the API's upload reader (the app's
#: JSON body cap must not buffer them).
UPLOAD_PATHS = r"/submit|/learnwares/[^/]+/new-version"
FILTERS = {
    "data_type": ("Data type", [e.value for e in DataType]),
    "task_type": ("Task", [e.value for e in TaskType]),
    "library_type": ("Library", [e.value for e in LibraryType]),
    "scenarios": ("Scenario", [e.value for e in Scenario]),
    "license": ("License", [e.value for e in License]),
}
SORTS = {"recent": "most recent", "downloads": "most downloaded", "name": "name"}
PAGE_SIZE = 12
#: Reduced sets of other learnwares drawn in a card's projection (the rest are counted).
MAX_NEIGHBOURS = 30


def _fmt_time(ts: float | None) -> str:
    if ts is None:
        return "–"
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _fmt_bytes(n: int | None) -> str:
    size = float(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name: uploaded text is untrusted
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["time"] = _fmt_time
    env.filters["bytes"] = _fmt_bytes
    env.filters["pretty_json"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False,
                                                      default=str)
    return env


# ---------------------------------------------------------------------- request context
@dataclass
class Ctx:
    """One request's caller and session, and the page renderer."""

    request: Request
    dock: Dock
    session: Session
    principal: Principal | None
    key: bytes

    @property
    def user(self) -> Any:
        return self.principal.user if self.principal else None

    def finish(self, resp: Response) -> Response:
        if self.session.dirty:
            resp.set_cookie(COOKIE, self.session.dump(self.key), max_age=COOKIE_MAX_AGE,
                            httponly=True, samesite="lax", path="/",
                            secure=self.request.url.scheme == "https")
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    def render(self, template: str, status: int = 200, **values: Any) -> Response:
        flash = self.session.flash
        if flash:
            self.session.flash, self.session.dirty = None, True
        html = self.request.app.state.web_env.get_template(template).render(
            user=self.user, csrf=self.session.csrf, flash=flash, path=self.request.url.path,
            registration=self.dock.settings.allow_registration, **values)
        return self.finish(HTMLResponse(html, status_code=status))

    def redirect(self, url: str, flash: str | None = None) -> Response:
        if flash:
            self.session.flash, self.session.dirty = flash, True
        return self.finish(RedirectResponse(url, status_code=303))

    def need_user(self) -> Principal:
        if self.principal is None:
            raise AuthenticationError("sign in to see this page")
        return self.principal

    def need_admin(self) -> Principal:
        p = self.need_user()
        if not p.is_admin:
            raise ForbiddenError("this page is for admins")
        return p


def _context(request: Request) -> Ctx:
    dock: Dock = request.app.state.dock
    key: bytes = request.app.state.web_key
    session = Session.load(key, request.cookies.get(COOKIE))
    principal = None
    if session.token:
        try:
            user, token = dock.accounts.resolve(session.token)
            principal = Principal(user, token)
        except LearndockError:  # revoked or expired: signed out
            session.token, session.dirty = None, True
    return Ctx(request, dock, session, principal, key)


def _csrf_ok(ctx: Ctx, form: Any = None) -> bool:
    sent = (ctx.request.headers.get("x-csrf-token")
            or (form.get("csrf_token") if form is not None else None)
            or ctx.request.query_params.get("csrf"))
    return ctx.session.check_csrf(sent)


def page(handler: Callable[..., Any] | None = None, *, stream: bool = False) -> Any:
    """Wrap a handler ``(ctx, request, **path) -> Response``: builds the context, checks the
    CSRF token of a POST (a streamed upload sends it in the query or a header: its body is not
    read here), and turns learndock errors into an error page with the API's status (signing
    in first, for a GET that needs an account)."""
    if handler is None:
        return functools.partial(page, stream=stream)
    names = list(inspect.signature(handler).parameters)[2:]

    @functools.wraps(handler)
    async def wrapped(request: Request, **kw: Any) -> Response:
        ctx = await run_in_threadpool(_context, request)
        if any(not _ID.match(str(v)) for k, v in kw.items() if k.endswith("_id")):
            return _error(ctx, ApiNotFoundError("no such page"))
        if request.method == "POST":
            form = None
            ctype = request.headers.get("content-type", "")
            if not stream and ctype.startswith(("application/x-www-form-urlencoded",
                                                "multipart/form-data")):
                form = await request.form()
            if not _csrf_ok(ctx, form):
                return ctx.render("error.html", 403, title="Form expired", code="csrf",
                                  message="This form's security token is missing or out of "
                                          "date (CSRF check). Reload the page and try again.")
            request.state.form = form
        try:
            return await handler(ctx, request, **kw)
        except AuthenticationError as exc:
            if ctx.principal is None and request.method == "GET":
                return ctx.redirect("/login?" + urlencode({"next": str(request.url.path)}))
            return _error(ctx, exc)
        except LearndockError as exc:
            return _error(ctx, exc)

    # FastAPI reads this signature: the request plus the path parameters, all strings.
    params = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation=Request)]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=str)
               for n in names]
    wrapped.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return wrapped


def _error(ctx: Ctx, exc: Exception) -> Response:
    status, code = describe(exc)
    titles = {403: "Not allowed", 404: "Not found", 409: "Conflict", 429: "Slow down"}
    return ctx.render("error.html", status, title=titles.get(status, "Something went wrong"),
                      message=str(exc), code=code)


def _form(request: Request) -> Any:
    return request.state.form


# ---------------------------------------------------------------------- API functions
# The API's own route functions, called with the session's caller (same checks, same errors).
def _api() -> Any:
    from learndock.server.routes import accounts, admin, learnwares

    return accounts, admin, learnwares


def _listing(ctx: Ctx, params: dict[str, Any], *, mine: bool = False,
             page_size: int = PAGE_SIZE) -> Any:
    _, _, lw = _api()
    return lw.list_learnwares(
        ctx.dock, ctx.principal, q=params.get("q", "")[:4096],
        data_type=params.get("data_type", []), task_type=params.get("task_type", []),
        library_type=params.get("library_type", []), scenarios=params.get("scenarios", []),
        license=params.get("license", []), input_dimension=None, output_dimension=None,
        owner=None, mine=mine, page=params.get("page", 0), page_size=page_size,
        sort=params.get("sort", "recent"))


def _browse_params(request: Request) -> dict[str, Any]:
    qp = request.query_params
    out: dict[str, Any] = {"q": qp.get("q", "").strip()}
    for name, (_, allowed) in FILTERS.items():
        out[name] = [v for v in qp.getlist(name) if v in allowed]
    out["sort"] = qp.get("sort", "recent") if qp.get("sort") in SORTS else "recent"
    try:
        out["page"] = min(max(int(qp.get("page", "0")), 0), 1_000_000)
    except ValueError:
        out["page"] = 0
    return out


def _url(path: str, params: dict[str, Any], **change: Any) -> str:
    merged = {**params, **change}
    pairs = [(k, v) for k, vs in merged.items() for v in (vs if isinstance(vs, list) else [vs])
             if v not in ("", None) and not (k == "page" and v == 0)
             and not (k == "sort" and v == "recent")]
    return path + ("?" + urlencode(pairs) if pairs else "")


# ---------------------------------------------------------------------- spec pictures
class _SpecCache:
    """Reduced sets of published versions, by (learnware, version): a version is immutable,
    so its spec never changes; bounded LRU."""

    def __init__(self, size: int = 512) -> None:
        self.size, self.data, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, dock: Dock, learnware_id: str, version: int) -> Any:
        key = (learnware_id, version)
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        lw = dock.market.load(learnware_id, version)  # reads the package; runs no model code
        try:
            spec = lw.stat_spec
        except LearndockError:
            spec = None
        with self.lock:
            self.data[key] = (spec, lw.manifest)
            while len(self.data) > self.size:
                self.data.popitem(last=False)
        return self.data[key]


def _projection(ctx: Ctx, info: Any) -> plots.Projection | None:
    if info.current_version is None or info.island is None:
        return None
    cache: _SpecCache = ctx.request.app.state.web_specs
    own, _ = cache.get(ctx.dock, info.id, info.current_version)
    if own is None:
        return None
    sem = info.semantic
    others = []
    page_no = 0
    while len(others) < MAX_NEIGHBOURS:
        pg = ctx.dock.market.list({"data_type": sem.data_type.value}, page=page_no,
                                  page_size=100)
        for o in pg.items:
            if o.id != info.id and o.island == info.island and o.current_version is not None:
                spec, _ = cache.get(ctx.dock, o.id, o.current_version)
                if spec is not None and spec.z.shape[1:] == own.z.shape[1:]:
                    others.append((o.semantic.name, spec.z, spec.beta))
            if len(others) >= MAX_NEIGHBOURS:
                break
        if (page_no + 1) * 100 >= pg.total:
            break
        page_no += 1
    return plots.projection((own.z, own.beta), others, getattr(own.kernel, "scale", None),
                            info.semantic.name)


def _island(ctx: Ctx, key: str | None) -> Any:
    for isl in ctx.dock.market.islands():
        if isl.key == key:
            return isl
    return None


# ---------------------------------------------------------------------- example specs
EXAMPLES = {
    "digits-0-4": ("Handwritten digits 0–4 (scikit-learn digits, 8×8 pixels as 64 columns)",
                   (0, 1, 2, 3, 4)),
    "digits-5-9": ("Handwritten digits 5–9 (same table layout)", (5, 6, 7, 8, 9)),
}


def _example_spec(dock: Dock, name: str) -> dict[str, Any]:
    """A user spec of real data (scikit-learn's digits), fitted under the market's kernel for
    that feature space, as a user would build it locally (seeded: same file every time)."""
    import numpy as np
    from sklearn.datasets import load_digits

    from learndock.spec import RKMETableSpec

    _, classes = EXAMPLES[name]
    X, y = load_digits(return_X_y=True)
    rows = (X / 16.0)[np.isin(y, classes)]
    kernel = dock.market.kernel_for(rows.shape[1])
    spec = RKMETableSpec.fit(rows, 20, kernel=kernel, random_state=0)
    return spec.to_dict()


# ---------------------------------------------------------------------- pages
router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
@page
async def home(ctx: Ctx, request: Request) -> Response:
    params = _browse_params(request)
    result = await run_in_threadpool(_listing, ctx, params)
    pages = max(1, -(-result.total // PAGE_SIZE))
    return ctx.render(
        "browse.html", title="Browse learnwares", params=params, result=result,
        filters=FILTERS, sorts=SORTS, pages=pages,
        prev_url=_url("/", params, page=params["page"] - 1) if params["page"] > 0 else None,
        next_url=_url("/", params, page=params["page"] + 1) if params["page"] + 1 < pages
        else None,
        share_url=str(request.url))


@router.get("/search", response_class=HTMLResponse)
@page
async def search_form(ctx: Ctx, request: Request) -> Response:
    return ctx.render("search.html", **_search_page(ctx))


def _search_page(ctx: Ctx, **extra: Any) -> dict[str, Any]:
    islands = ctx.dock.market.islands()
    values = {"text": "", "data_type": "", "task_type": "", "library_type": "",
              "scenarios": "", "license": "", "target_description": "", "top_k": 10}
    values.update(extra.pop("values", {}))
    return {"title": "Search with requirements", "filters": FILTERS, "islands": islands,
            "examples": EXAMPLES, "values": values, "result": None, "error": None, **extra}


@router.post("/search", response_class=HTMLResponse)
@page
async def search_run(ctx: Ctx, request: Request) -> Response:
    from learndock.server.models import SearchRequest

    _, _, lw = _api()
    form = _form(request)
    values = {k: str(form.get(k, "") or "").strip() for k in
              ("text", "data_type", "task_type", "library_type", "scenarios", "license",
               "target_description")}
    try:
        values["top_k"] = min(max(int(form.get("top_k") or 10), 1), 100)
    except ValueError:
        values["top_k"] = 10
    query = {k: v for k, v in values.items() if k != "top_k" and v}
    for k in FILTERS:
        if k in query and query[k] not in FILTERS[k][1]:
            return ctx.render("search.html", 422, **_search_page(
                ctx, values=values, error=f"unknown {FILTERS[k][0].lower()} {query[k]!r}"))
    spec = None
    upload = form.get("spec")
    example = str(form.get("example", "") or "")
    try:
        if upload is not None and getattr(upload, "filename", ""):
            raw = await upload.read()
            try:
                spec = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise ValidationFailedError(f"the spec file is not valid JSON: {exc}") from None
        elif example in EXAMPLES:
            spec = await run_in_threadpool(_example_spec, ctx.dock, example)
        if spec is None and not query:
            raise ValidationFailedError("give some requirements or a statistical spec")
        descs = _spec_descriptions(spec)
        if descs:  # the spec says what its columns are: search other feature spaces too
            query["input_descriptions"] = descs
        body = SearchRequest(query=query or None, spec=spec, top_k=values["top_k"])
        res = await run_in_threadpool(lw.search, body, request, ctx.dock, ctx.principal)
    except LearndockError as exc:
        status, _ = describe(exc)
        return ctx.render("search.html", status, **_search_page(ctx, values=values,
                                                                error=str(exc)))
    mixture = None
    if res.mixture is not None:
        mixture = list(zip(res.mixture.learnware_ids, res.mixture.names, res.mixture.weights,
                           strict=False))
    return ctx.render("search.html", **_search_page(
        ctx, values=values, result=res, mixture=mixture, used_spec=spec is not None,
        example=example if example in EXAMPLES and upload is None else ""))


def _spec_descriptions(spec: Any) -> list[str]:
    """The column descriptions a table spec file carries (``learndock spec table`` keeps them
    in ``fit_info.columns``), or ``[]``."""
    info = spec.get("fit_info") if isinstance(spec, dict) else None
    cols = info.get("columns") if isinstance(info, dict) else None
    if not isinstance(cols, list) or not cols:
        return []
    out = [c.get("description") if isinstance(c, dict) else None for c in cols]
    return [str(d) for d in out] if all(isinstance(d, str) and d.strip() for d in out) else []


@router.get("/search/examples/{name}.json")
@page
async def example_spec(ctx: Ctx, request: Request, name: str) -> Response:
    if name not in EXAMPLES:
        raise ApiNotFoundError(f"no example spec {name!r}")
    spec = await run_in_threadpool(_example_spec, ctx.dock, name)
    return ctx.finish(JSONResponse(spec, headers={
        "Content-Disposition": f'attachment; filename="{name}.json"'}))


def _kernel_file(ctx: Ctx, key: str) -> dict[str, Any]:
    """The island's kernel file, ``{"kernel": {...}, "kernel_version", "history", ...}``
    (``Market.island_kernel``; NotFoundError for an unknown island)."""
    return ctx.dock.market.island_kernel(key).to_dict()


@router.get("/islands/{key}/kernel.json")
@page
async def island_kernel(ctx: Ctx, request: Request, key: str) -> Response:
    doc = await run_in_threadpool(_kernel_file, ctx, key)
    safe = "".join(c if c.isalnum() else "-" for c in key)[:60]
    return ctx.finish(JSONResponse(doc, headers={
        "Content-Disposition": f'attachment; filename="kernel-{safe}.json"'}))


@router.get("/learnwares/{learnware_id}", response_class=HTMLResponse)
@page
async def card(ctx: Ctx, request: Request, learnware_id: str) -> Response:
    _, _, lw = _api()

    def load() -> dict[str, Any]:
        info = lw.visible(ctx.dock, learnware_id, ctx.principal)
        manage = lw.may_manage(ctx.principal, info)
        versions = lw._versions(ctx.dock, info, manage)
        contract = None
        if info.current_version is not None:
            cache = ctx.request.app.state.web_specs
            _, contract = cache.get(ctx.dock, info.id, info.current_version)
        return {"info": info, "manage": manage, "versions": versions, "contract": contract,
                "projection": _projection(ctx, info), "island": _island(ctx, info.island)}

    data = await run_in_threadpool(load)
    info = data["info"]
    base = str(request.base_url).rstrip("/")
    return ctx.render("card.html", title=info.semantic.name, base=base, **data)


@router.get("/learnwares/{learnware_id}/download")
@page
async def download(ctx: Ctx, request: Request, learnware_id: str) -> Response:
    _, _, lw = _api()
    version = request.query_params.get("version")
    number = int(version) if version and version.isdigit() else None
    resp = await run_in_threadpool(lw.download, learnware_id, ctx.dock, ctx.principal, number)
    return ctx.finish(resp)


@router.get("/learnwares/{learnware_id}/status.json")
@page
async def status_json(ctx: Ctx, request: Request, learnware_id: str) -> Response:
    _, _, lw = _api()
    st = await run_in_threadpool(lw.status, learnware_id, ctx.dock, ctx.need_user())
    return ctx.finish(JSONResponse(st.model_dump()))


@router.get("/learnwares/{learnware_id}/progress", response_class=HTMLResponse)
@page
async def progress(ctx: Ctx, request: Request, learnware_id: str) -> Response:
    _, _, lw = _api()
    st = await run_in_threadpool(lw.status, learnware_id, ctx.dock, ctx.need_user())
    info = await run_in_threadpool(lw.visible, ctx.dock, learnware_id, ctx.principal)
    raw = request.query_params.get("version", "")
    number = int(raw) if raw.isdigit() else st.latest_version
    version = next((v for v in st.versions if v.number == number), None)
    if version is None:
        raise ApiNotFoundError(f"learnware {learnware_id!r} has no version {number}")
    return ctx.render("progress.html", title=f"Verifying {info.semantic.name}", info=info,
                      version=version, steps=["queued", "verifying", "published"])


# ---------------------------------------------------------------------- submit
@router.get("/submit", response_class=HTMLResponse)
@page
async def submit_form(ctx: Ctx, request: Request) -> Response:
    ctx.need_user()
    return ctx.render("submit.html", title="Submit a learnware", error=None, report=None,
                      target=None)


async def _upload(ctx: Ctx, request: Request, learnware_id: str | None) -> Response:
    from learndock.market.types import RejectedError

    _, _, lw = _api()
    me = ctx.need_user()
    target = None
    try:
        if learnware_id is not None:
            target = await run_in_threadpool(lw.visible, ctx.dock, learnware_id, me)
            if target.owner != me.id:
                raise ForbiddenError(f"only the owner of learnware {learnware_id!r} can upload "
                                     "new versions")
        sub = await lw._receive_and_submit(request, ctx.dock, me, learnware_id,
                                           target.owner if target else me.id)
    except LearndockError as exc:
        status, _ = describe(exc)
        report = exc.report.to_dict() if isinstance(exc, RejectedError) else None
        message = ("The package was refused before storage; nothing was kept."
                   if report else str(exc))
        return ctx.render("submit.html", status, title="Submit a learnware", error=message,
                          report=report, target=target)
    return ctx.redirect(f"/learnwares/{sub.learnware_id}/progress?version={sub.version}")


@router.post("/submit", response_class=HTMLResponse)
@page(stream=True)
async def submit(ctx: Ctx, request: Request) -> Response:
    return await _upload(ctx, request, None)


@router.get("/learnwares/{learnware_id}/new-version", response_class=HTMLResponse)
@page
async def new_version_form(ctx: Ctx, request: Request, learnware_id: str) -> Response:
    _, _, lw = _api()
    me = ctx.need_user()
    target = await run_in_threadpool(lw.visible, ctx.dock, learnware_id, me)
    if target.owner != me.id:
        raise ForbiddenError("only the owner can upload new versions")
    return ctx.render("submit.html", title=f"New version of {target.name}", error=None,
                      report=None, target=target)


@router.post("/learnwares/{learnware_id}/new-version", response_class=HTMLResponse)
@page(stream=True)
async def new_version(ctx: Ctx, request: Request, learnware_id: str) -> Response:
    return await _upload(ctx, request, learnware_id)


@router.post("/learnwares/{learnware_id}/delete")
@page
async def delete(ctx: Ctx, request: Request, learnware_id: str) -> Response:
    _, _, lw = _api()
    info = await run_in_threadpool(lw.visible, ctx.dock, learnware_id, ctx.need_user())
    await run_in_threadpool(lw.delete, learnware_id, ctx.dock, ctx.need_user())
    return ctx.redirect("/me/learnwares", f"Deleted “{info.semantic.name}”.")


# ---------------------------------------------------------------------- accounts
@router.get("/login", response_class=HTMLResponse)
@page
async def login_form(ctx: Ctx, request: Request) -> Response:
    return ctx.render("login.html", title="Sign in", error=None, email="",
                      next=_safe_next(request.query_params.get("next")))


def _safe_next(target: str | None) -> str:
    """Only same-site paths (never ``//host`` or a scheme): no open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/me/learnwares"


async def _sign_in(ctx: Ctx, user: Any, target: str) -> Response:
    new = await run_in_threadpool(ctx.dock.accounts.create_token, user.id, "web session",
                                  kind="login")
    ctx.session = Session(token=new.secret, dirty=True)  # a fresh CSRF nonce with the session
    return ctx.redirect(target, f"Signed in as {user.email}.")


@router.post("/login", response_class=HTMLResponse)
@page
async def login(ctx: Ctx, request: Request) -> Response:
    accounts, _, _ = _api()
    form = _form(request)
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "")))
    try:
        accounts._limit_login(ctx.dock, request, email)
        user = await run_in_threadpool(ctx.dock.accounts.authenticate, email, password)
    except LearndockError as exc:
        status, _ = describe(exc)
        return ctx.render("login.html", status, title="Sign in", error=str(exc), email=email,
                          next=target)
    return await _sign_in(ctx, user, target)


@router.get("/register", response_class=HTMLResponse)
@page
async def register_form(ctx: Ctx, request: Request) -> Response:
    return ctx.render("register.html", title="Create an account", error=None, email="")


@router.post("/register", response_class=HTMLResponse)
@page
async def register(ctx: Ctx, request: Request) -> Response:
    from learndock.server.models import Credentials

    accounts, _, _ = _api()
    form = _form(request)
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    try:
        if password != str(form.get("password2", "")):
            raise ValidationFailedError("the two passwords differ")
        user = await accounts.register(Credentials(email=email[:320],
                                                   password=password[:1024]), request, ctx.dock)
    except LearndockError as exc:
        status, _ = describe(exc)
        return ctx.render("register.html", status, title="Create an account", error=str(exc),
                          email=email)
    return await _sign_in(ctx, user, "/me")


@router.post("/logout")
@page
async def logout(ctx: Ctx, request: Request) -> Response:
    if ctx.principal is not None:
        await run_in_threadpool(ctx.dock.accounts.revoke_token, ctx.principal.token.id,
                                user_id=ctx.principal.id)
    ctx.session = Session(dirty=True, flash="Signed out.")
    return ctx.redirect("/")


@router.get("/me", response_class=HTMLResponse)
@page
async def account(ctx: Ctx, request: Request) -> Response:
    me = ctx.need_user()
    mine = await run_in_threadpool(_listing, ctx, {}, mine=True, page_size=1)
    return ctx.render("account.html", title="Your account", me=me.user, n_learnwares=mine.total)


@router.get("/me/learnwares", response_class=HTMLResponse)
@page
async def my_learnwares(ctx: Ctx, request: Request) -> Response:
    ctx.need_user()
    params = _browse_params(request)
    result = await run_in_threadpool(_listing, ctx, params, mine=True, page_size=100)
    return ctx.render("mine.html", title="Your learnwares", result=result)


@router.get("/me/tokens", response_class=HTMLResponse)
@page
async def tokens(ctx: Ctx, request: Request) -> Response:
    accounts, _, _ = _api()
    items = await run_in_threadpool(accounts.list_tokens, ctx.need_user(), ctx.dock)
    return ctx.render("tokens.html", title="API tokens", tokens=items, new=None, error=None,
                      base=str(request.base_url).rstrip("/"))


@router.post("/me/tokens", response_class=HTMLResponse)
@page
async def token_create(ctx: Ctx, request: Request) -> Response:
    from pydantic import ValidationError

    from learndock.server.models import TokenCreate

    accounts, _, _ = _api()
    me = ctx.need_user()
    form = _form(request)
    error = new = None
    try:
        days = str(form.get("days", "") or "").strip()
        body = TokenCreate(name=str(form.get("name", "")).strip()[:100],
                           expires_in_days=float(days) if days else None)
        new = await run_in_threadpool(accounts.create_token, body, me, ctx.dock)
    except (ValueError, ValidationError):
        error = "the lifetime must be a number of days between 1 and 3650"
    except LearndockError as exc:
        error = str(exc)
    items = await run_in_threadpool(accounts.list_tokens, me, ctx.dock)
    return ctx.render("tokens.html", 201 if new else 422, title="API tokens", tokens=items,
                      new=new, error=error, base=str(request.base_url).rstrip("/"))


@router.post("/me/tokens/{token_id}/revoke")
@page
async def token_revoke(ctx: Ctx, request: Request, token_id: str) -> Response:
    accounts, _, _ = _api()
    me = ctx.need_user()
    if token_id == me.token.id:
        raise ValidationFailedError("this is the token of your web session: sign out instead")
    await run_in_threadpool(accounts.revoke_token, token_id, me, ctx.dock)
    return ctx.redirect("/me/tokens", "Token revoked.")


# ---------------------------------------------------------------------- admin
@router.get("/admin", response_class=HTMLResponse)
@page
async def admin_home(ctx: Ctx, request: Request) -> Response:
    ctx.need_admin()
    return ctx.redirect("/admin/stats")


@router.get("/admin/users", response_class=HTMLResponse)
@page
async def admin_users(ctx: Ctx, request: Request) -> Response:
    _, adm, _ = _api()
    me = ctx.need_admin()
    params = _browse_params(request)
    pg = await run_in_threadpool(adm.list_users, ctx.dock, me, params["page"], 50)
    pages = max(1, -(-pg.total // 50))
    return ctx.render("admin_users.html", title="Users and roles", page=pg, pages=pages)


@router.post("/admin/users/{user_id}/role")
@page
async def admin_role(ctx: Ctx, request: Request, user_id: str) -> Response:
    from learndock.server.models import RoleChange

    _, adm, _ = _api()
    me = ctx.need_admin()
    role = str(_form(request).get("role", ""))
    if role not in ("user", "admin"):
        raise ValidationFailedError("role must be user or admin")
    u = await run_in_threadpool(adm.change_role, user_id, RoleChange(role=role),  # type: ignore[arg-type]
                                ctx.dock, me)
    return ctx.redirect("/admin/users", f"{u.email} is now {u.role}.")


@router.get("/admin/queue", response_class=HTMLResponse)
@page
async def admin_queue(ctx: Ctx, request: Request) -> Response:
    _, adm, _ = _api()
    me = ctx.need_admin()
    states = ["queued", "running", "failed", "done"]
    chosen = [s for s in request.query_params.getlist("state") if s in states + ["cancelled"]]
    q = await run_in_threadpool(adm.queue, ctx.dock, me, chosen or states, 100, 0)
    return ctx.render("admin_queue.html", title="Verification queue", queue=q,
                      states=states + ["cancelled"], chosen=chosen or states, now=time.time())


@router.post("/admin/queue/{job_id}/retry")
@page
async def admin_retry(ctx: Ctx, request: Request, job_id: str) -> Response:
    _, adm, _ = _api()
    me = ctx.need_admin()
    await run_in_threadpool(adm.retry, job_id, ctx.dock, me)
    return ctx.redirect("/admin/queue", "Job queued again.")


@router.get("/admin/stats", response_class=HTMLResponse)
@page
async def admin_stats(ctx: Ctx, request: Request) -> Response:
    _, adm, _ = _api()
    me = ctx.need_admin()
    st = await run_in_threadpool(adm.stats, ctx.dock, me)
    charts = [
        plots.bar_chart("Learnwares by state", st.learnwares_by_state),
        plots.bar_chart("Published by data type", st.published_by_data_type),
        plots.bar_chart("Published by task", st.published_by_task_type),
        plots.bar_chart("Uploads per day (last 30 days)", st.uploads_by_day),
        plots.bar_chart("Verification jobs", st.queue),
        plots.bar_chart("Accounts by role", st.users),
    ]
    return ctx.render("admin_stats.html", title="Statistics", stats=st, charts=charts)


# ---------------------------------------------------------------------- mounting
def mount_web(app: FastAPI) -> None:
    """Serve the UI at ``/`` on ``app`` (after its API routers), with the security headers."""
    dock: Dock = app.state.dock
    app.state.web_env = _env()
    app.state.web_key = read_signing_key(dock.settings.resolved_home)
    app.state.web_specs = _SpecCache()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)
    app.add_middleware(SecurityHeaders)
