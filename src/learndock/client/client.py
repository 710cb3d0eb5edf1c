"""``Client``: the dock's HTTP API with the local ``Market``'s method names and return types.

>>> dock = Client("http://127.0.0.1:8000", token="ld_...")
>>> sub = dock.upload("my-learnware.zip")              # queued for verification
>>> dock.wait(sub.learnware_id)                         # published (or rejected, with the log)
>>> res = dock.search({"task_type": "Classification"}, spec=user_spec)
>>> lw = dock.load(res.learnware_ids[0])                # downloaded, verified, cached, loaded

``get``/``list``/``versions``/``search`` return the same records as
:class:`learndock.market.Market` (``LearnwareInfo``, ``Page``, ``VersionInfo``,
``SearchResult``; a published version's status reads ``accepted`` there, as locally). Errors
the server reports are raised as learndock errors carrying its message (e.g. a missing id
raises something ``except NotFoundError`` catches; see :mod:`learndock.server.errors`).
Connection failures and 502/503/504 answers are retried with exponential backoff (uploads only
when nothing was sent). Downloads land in a content-addressed cache,
``<home>/cache/downloads/<sha256>.zip``, checked against the SHA-256 the server sends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from tqdm import tqdm

from learndock import __version__
from learndock.config import ArchiveLimits, Settings
from learndock.errors import NotFoundError
from learndock.market.types import (
    ACCEPTED,
    BlobIntegrityError,
    LearnwareInfo,
    Page,
    VersionInfo,
)
from learndock.package.learnware import Learnware, load_learnware
from learndock.search.result import CrossIslandMatch, MixtureMatch, SearchResult, SingleMatch
from learndock.server.errors import ApiNotFoundError, ServiceUnavailableError, exception_for
from learndock.server.models import (
    IslandOut,
    NewTokenOut,
    StatusOut,
    SubmissionOut,
    TokenOut,
    UserOut,
    VersionOut,
)
from learndock.spec.io import StatSpec, load_stat_spec
from learndock.spec.kernels import GaussianKernel
from learndock.spec.semantic import SemanticQuery, SemanticSpec

_CHUNK = 1 << 20
_RETRY_STATUS = {502, 503, 504}
_DONE = ("published", "rejected", "failed")


def _status(state: str) -> str:
    """API state -> the market's status vocabulary (``published`` is ``accepted``)."""
    return ACCEPTED if state == "published" else state


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class Client:
    """A learndock dock over HTTP (see the module docstring)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        home: str | Path | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        progress: bool | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base = url.rstrip("/")
        if not base.endswith("/api/v1"):
            base += "/api/v1"
        self.url = base
        self.token = token
        self.retries, self.backoff = max(0, retries), backoff
        self.progress = progress
        self.home = Path(home) if home is not None else Settings().home
        self.cache_dir = self.home / "cache" / "downloads"
        self.http = httpx.Client(
            base_url=base, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"User-Agent": f"learndock-client/{__version__}"}, transport=transport,
        )

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _show_progress(self) -> bool:
        return self.progress if self.progress is not None else sys.stderr.isatty()

    def _sleep(self, attempt: int, resp: httpx.Response | None = None) -> None:
        delay = self.backoff * (2**attempt)
        if resp is not None:
            with contextlib.suppress(TypeError, ValueError):
                delay = max(delay, min(float(resp.headers.get("retry-after", 0)), 30.0))
        time.sleep(delay)

    @staticmethod
    def _raise_for(resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        try:
            body = resp.json()
        except ValueError:
            body = None
        raise exception_for(resp.status_code, body, resp.headers)

    def _send(self, method: str, path: str, *, idempotent: bool = True,
              stream: bool = False, body: Callable[[], dict[str, Any]] | None = None,
              **kw: Any) -> httpx.Response:
        """One request with retries. ``body`` builds fresh request arguments per attempt
        (for streamed uploads). A streamed response must be closed by the caller."""
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            args = dict(kw)
            if body is not None:
                args.update(body())
            headers = {**self._headers(), **args.pop("headers", {})}
            try:
                req = self.http.build_request(method, path, headers=headers, **args)
                resp = self.http.send(req, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                last = exc  # nothing reached the server: safe to retry any request
            except (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError,
                    httpx.WriteError, httpx.WriteTimeout) as exc:
                if not idempotent:
                    raise ServiceUnavailableError(
                        f"{method} {self.url}{path} failed mid-request ({type(exc).__name__}: "
                        f"{exc}); it was not retried (it may have been received)") from exc
                last = exc
            else:
                if resp.status_code in _RETRY_STATUS and attempt < self.retries and (
                        idempotent or resp.status_code == 503):
                    resp.close()
                    self._sleep(attempt, resp)
                    continue
                if resp.status_code >= 400:
                    if stream:
                        resp.read()
                        resp.close()
                    self._raise_for(resp)
                return resp
            if attempt < self.retries:
                self._sleep(attempt)
        raise ServiceUnavailableError(
            f"cannot reach the dock at {self.url} after {self.retries + 1} attempt(s): "
            f"{type(last).__name__}: {last}") from last

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._send(method, path, **kw)
        return resp.json() if resp.content else None

    # ------------------------------------------------------------------ accounts
    def register(self, email: str, password: str) -> UserOut:
        return UserOut(**self._json("POST", "/auth/register",
                                    json={"email": email, "password": password},
                                    idempotent=False))

    def login(self, email: str, password: str) -> str:
        """Log in; the client uses the returned token from now on."""
        out = self._json("POST", "/auth/login", json={"email": email, "password": password},
                         idempotent=False)
        self.token = out["token"]
        return str(out["token"])

    def logout(self) -> None:
        """Revoke the token this client uses (and forget it)."""
        self._send("POST", "/auth/logout")
        self.token = None

    def me(self) -> UserOut:
        return UserOut(**self._json("GET", "/me"))

    def create_token(self, name: str = "", expires_in_days: float | None = None) -> NewTokenOut:
        return NewTokenOut(**self._json("POST", "/tokens", idempotent=False,
                                        json={"name": name, "expires_in_days": expires_in_days}))

    def list_tokens(self) -> list[TokenOut]:
        return [TokenOut(**t) for t in self._json("GET", "/tokens")]

    def revoke_token(self, token_id: str) -> None:
        self._send("DELETE", f"/tokens/{token_id}")

    # ------------------------------------------------------------------ reads
    @staticmethod
    def _info(d: dict[str, Any]) -> LearnwareInfo:
        return LearnwareInfo(
            id=d["id"], name=d["name"], owner=d.get("owner"), status=_status(d["state"]),
            current_version=d.get("current_version"), latest_version=int(d["latest_version"]),
            semantic=SemanticSpec.parse(d["semantic"]) if d.get("semantic") else None,  # type: ignore[arg-type]
            island=d.get("island"), download_count=int(d["download_count"]),
            created_at=float(d["created_at"]), updated_at=float(d["updated_at"]),
        )

    @staticmethod
    def _version(d: dict[str, Any]) -> VersionInfo:
        return VersionInfo(
            number=int(d["number"]), semver=d["semver"], status=_status(d["state"]),
            report=d.get("report") or {}, package_sha256=d["package_sha256"],
            size_bytes=int(d["size_bytes"]), created_at=float(d["created_at"]),
            available=bool(d["available"]), verified_at=d.get("verified_at"),
            current=bool(d.get("current")),
        )

    def get(self, learnware_id: str) -> LearnwareInfo:
        return self._info(self._json("GET", f"/learnwares/{learnware_id}"))

    def list(
        self,
        query: SemanticQuery | dict[str, Any] | None = None,
        *,
        page: int = 0,
        page_size: int = 20,
        sort: str = "recent",
        mine: bool = False,
        owner: str | None = None,
    ) -> Page:
        """Learnwares matching the tags (and ``text``), like ``Market.list``; ``mine=True``
        lists the caller's own in any state."""
        params: list[tuple[str, Any]] = [("page", page), ("page_size", page_size),
                                         ("sort", sort)]
        if mine:
            params.append(("mine", "true"))
        if owner is not None:
            params.append(("owner", owner))
        if query is not None:
            q = query if isinstance(query, SemanticQuery) else SemanticQuery.parse(query)
            for key in ("data_type", "task_type", "library_type", "scenarios", "license"):
                params += [(key, v.value) for v in getattr(q, key)]
            if q.text:
                params.append(("q", q.text))
            for key in ("input_dimension", "output_dimension"):
                if getattr(q, key) is not None:
                    params.append((key, getattr(q, key)))
        d = self._json("GET", "/learnwares", params=params)
        return Page([self._info(i) for i in d["items"]], int(d["total"]), int(d["page"]),
                    int(d["page_size"]))

    def versions(self, learnware_id: str) -> list[VersionInfo]:
        return [self._version(v) for v in self._json("GET", f"/learnwares/{learnware_id}/versions")]

    def status(self, learnware_id: str) -> StatusOut:
        """Verification state of every version, with check logs and jobs (owner/admin)."""
        return StatusOut(**self._json("GET", f"/learnwares/{learnware_id}/status"))

    def islands(self) -> list[IslandOut]:
        return [IslandOut(**i) for i in self._json("GET", "/islands")]

    def island_kernel(self, island: str) -> dict[str, Any]:
        """The island's kernel file (``{"island", "kernel_version", "kernel", "history"}``):
        save it as JSON and fit with ``learndock spec table --kernel-from FILE``, or pass
        ``GaussianKernel.from_dict(doc["kernel"])`` to ``RKMETableSpec.fit(kernel=...)``."""
        return dict(self._json("GET", f"/islands/{quote(island, safe=':')}/kernel"))

    def kernel_for(self, dimension: int, feature_names: list[str] | None = None,
                   data_type: str = "Table") -> GaussianKernel | None:
        """The kernel of the dock's largest island for this feature space (as the Market's)."""
        best = None
        for isl in self.islands():
            if isl.dimension != dimension or isl.data_type != data_type:
                continue
            if feature_names is not None and isl.feature_names != list(feature_names):
                continue
            if best is None or isl.n_learnwares > best.n_learnwares:
                best = isl
        return GaussianKernel.from_dict(best.kernel) if best else None

    def health(self) -> dict[str, Any]:
        resp = self.http.get("/health")
        return dict(resp.json())

    def metrics(self) -> dict[str, Any]:
        return dict(self._json("GET", "/metrics"))

    # ------------------------------------------------------------------ search
    def search(
        self,
        query: SemanticQuery | dict[str, Any] | None = None,
        spec: StatSpec | dict[str, Any] | str | Path | None = None,
        *,
        top_k: int = 10,
        max_mixture: int = 5,
    ) -> SearchResult:
        """Search like ``Market.search``: ``spec`` may be a spec object, its JSON dict or a spec
        file (read and cap-checked here before it is sent). With the query's
        ``input_descriptions`` (one per column of a table spec) the result's ``cross_island``
        lists learnwares of other feature spaces."""
        q: dict[str, Any] | None
        if query is None:
            q = None
        elif isinstance(query, SemanticQuery):
            q = query.model_dump(mode="json", exclude_defaults=True)
        else:
            q = dict(query)
        s: dict[str, Any] | None
        if spec is None:
            s = None
        elif isinstance(spec, dict):
            s = spec
        elif isinstance(spec, (str, Path)):
            s = load_stat_spec(spec, ArchiveLimits(), user=True).to_dict()
        else:
            s = spec.to_dict()
        d = self._json("POST", "/search", json={"query": q, "spec": s, "top_k": top_k,
                                                "max_mixture": max_mixture})
        mix = d.get("mixture")
        return SearchResult(
            single=[SingleMatch(**{k: m.get(k) for k in SingleMatch.__dataclass_fields__})
                    for m in d["single"]],
            mixture=MixtureMatch(**{k: mix.get(k) for k in MixtureMatch.__dataclass_fields__})
            if mix else None,
            cross_island=[CrossIslandMatch(**{k: c[k] for k in CrossIslandMatch.__dataclass_fields__
                                              if k in c})
                          for c in d.get("cross_island") or []],
            explanation=list(d["explanation"]),
            timings_ms=dict(d["timings_ms"]),
        )

    # ------------------------------------------------------------------ uploads
    def _multipart(self, path: Path, semantic: Any) -> Callable[[], dict[str, Any]]:
        size = path.stat().st_size
        boundary = uuid.uuid4().hex
        parts = b""
        if semantic is not None:
            parts += (f'--{boundary}\r\nContent-Disposition: form-data; name="semantic"\r\n'
                      "Content-Type: application/json\r\n\r\n").encode() \
                + json.dumps(semantic).encode() + b"\r\n"
        head = parts + (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                        'filename="package.zip"\r\nContent-Type: application/zip\r\n\r\n'
                        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        show = self._show_progress()

        def build() -> dict[str, Any]:
            def chunks() -> Iterator[bytes]:
                with tqdm(total=size, unit="B", unit_scale=True, desc=f"upload {path.name}",
                          disable=not show, leave=False) as bar, open(path, "rb") as f:
                    yield head
                    while chunk := f.read(_CHUNK):
                        bar.update(len(chunk))
                        yield chunk
                    yield tail

            return {"content": chunks(), "headers": {
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(head) + size + len(tail))}}

        return build

    def upload(
        self,
        path: str | Path,
        *,
        learnware_id: str | None = None,
        semantic: Any = None,
        wait: bool = False,
        timeout: float = 600.0,
    ) -> SubmissionOut:
        """Upload a package (a new learnware, or with ``learnware_id`` a new version of yours).
        The dock answers at once with the version ``queued``; ``wait=True`` returns only when
        its checks are done (state ``published``, ``rejected`` or ``failed``)."""
        p = Path(path)
        route = f"/learnwares/{learnware_id}/versions" if learnware_id else "/learnwares"
        sub = SubmissionOut(**self._json("POST", route, idempotent=False,
                                         body=self._multipart(p, semantic)))
        if wait:
            v = self.wait(sub.learnware_id, sub.version, timeout=timeout)
            sub = sub.model_copy(update={"state": v.state, "report": v.report or sub.report})
        return sub

    def update(self, learnware_id: str, path: str | Path, **kw: Any) -> SubmissionOut:
        """A new version of your learnware (``Market.update``)."""
        return self.upload(path, learnware_id=learnware_id, **kw)

    def wait(self, learnware_id: str, version: int | None = None, *, timeout: float = 600.0,
             poll: float = 0.25) -> VersionOut:
        """Poll until the version (default: the latest) is published, rejected or failed."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(learnware_id)
            number = version if version is not None else st.latest_version
            match = [v for v in st.versions if v.number == number]
            if match and match[0].state in _DONE:
                return match[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"learnware {learnware_id} version {number} is still "
                                   f"{match[0].state if match else 'unknown'} after {timeout} s")
            time.sleep(poll)
            poll = min(poll * 1.5, 5.0)

    def delete(self, learnware_id: str) -> None:
        self._send("DELETE", f"/learnwares/{learnware_id}")

    # ------------------------------------------------------------------ downloads
    def download(self, learnware_id: str, dest: str | Path | None = None,
                 version: int | None = None) -> Path:
        """The package zip (current published version unless ``version``), from the cache if
        it holds those bytes, else downloaded and checked against the server's SHA-256.
        ``dest``: a file path or a directory to copy it to (default: the cached file)."""
        versions = self.versions(learnware_id)
        if version is None:
            match = [v for v in versions if v.current]
        else:
            match = [v for v in versions if v.number == version]
        if not match:
            raise ApiNotFoundError(f"learnware {learnware_id!r} has no "
                                   + (f"version {version}" if version else "published version"))
        v = match[0]
        cached = self._fetch(learnware_id, v.number, v.package_sha256, v.size_bytes)
        if dest is None:
            return cached
        out = Path(dest)
        if out.is_dir():
            out = out / f"{learnware_id}-v{v.number}.zip"
        shutil.copyfile(cached, out)
        return out

    def _fetch(self, learnware_id: str, number: int, sha: str, size: int) -> Path:
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ServiceUnavailableError(f"the dock sent a malformed SHA-256: {sha[:80]!r}")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        cached = self.cache_dir / f"{sha}.zip"
        if cached.is_file():
            if _sha256_file(cached) == sha:
                return cached
            cached.unlink(missing_ok=True)  # a corrupted cache entry: fetch again
        part = self.cache_dir / f".{sha}.{uuid.uuid4().hex[:8]}.part"
        try:
            resp = self._send("GET", f"/learnwares/{learnware_id}/download",
                              params={"version": number}, stream=True)
            try:
                header = resp.headers.get("x-learndock-sha256", "")
                if header != sha:
                    raise BlobIntegrityError(learnware_id, number, sha, header or "(none sent)")
                h = hashlib.sha256()
                with open(part, "wb") as f, tqdm(
                        total=size, unit="B", unit_scale=True, leave=False,
                        desc=f"download {learnware_id} v{number}",
                        disable=not self._show_progress()) as bar:
                    for chunk in resp.iter_bytes(_CHUNK):
                        h.update(chunk)
                        f.write(chunk)
                        bar.update(len(chunk))
            finally:
                resp.close()
            if h.hexdigest() != sha:
                raise BlobIntegrityError(learnware_id, number, sha, h.hexdigest())
            os.replace(part, cached)
        finally:
            part.unlink(missing_ok=True)
        return cached

    def decide(self, result: SearchResult, X: Any, labels: Any = None, *,
               top_k: int | None = None, **params: Any) -> Any:
        """The decision step, here, on your rows: load the shortlist (``result.single``,
        the first ``top_k``) and the mixture's members, run their models on ``X``
        and re-rank by what they do (with ``labels``: a validated choice among them, the
        mixture and your own model). Returns the :class:`~learndock.reuse.decision.Decision`
        (also kept in ``result.decision``). ``X`` and ``labels`` never leave this process."""
        return result.decide_loading(self.load, X, labels, top_k=top_k, **params)

    def load(self, learnware_id: str, version: int | None = None) -> Learnware:
        """Download (or reuse the cached copy) and open the learnware; ``python``-format models
        run only in the local sandbox, never in this process."""
        path = self.download(learnware_id, version=version)
        lw = load_learnware(path, runtime="sandbox", limits=ArchiveLimits())
        lw.market_id = learnware_id  # type: ignore[attr-defined]
        return lw


__all__ = ["Client", "NotFoundError"]
