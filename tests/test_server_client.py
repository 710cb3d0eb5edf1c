"""``learndock.client.Client`` on its own: retries with backoff on connection errors and
502/503/504, never on refusals; typed error bodies become learndock errors."""

from __future__ import annotations

import httpx
import pytest

from learndock.client import Client, ServiceUnavailableError
from learndock.errors import NotFoundError, SpecError
from server_helpers import free_port


def _client(handler, **kw) -> Client:
    return Client("http://dock.test", "ld_" + "x" * 43, transport=httpx.MockTransport(handler),
                  backoff=0.01, progress=False, **kw)


def test_transient_failures_are_retried_then_succeed(tmp_path) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        if len(calls) < 4:
            return httpx.Response(503, json={"error": {"code": "unavailable", "message": "busy"}})
        return httpx.Response(200, json={"id": "u1", "email": "a@b.org", "role": "user",
                                         "created_at": 1.0})

    c = _client(handler, retries=3, home=tmp_path)
    assert c.me().email == "a@b.org"
    assert len(calls) == 4
    assert calls[-1].headers["authorization"].startswith("Bearer ld_")


def test_refusals_are_not_retried_and_are_typed(tmp_path) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if request.url.path.endswith("/search"):
            return httpx.Response(422, json={"error": {"code": "invalid_spec",
                                                       "message": "spec has 9 points"}})
        return httpx.Response(404, json={"error": {"code": "not_found",
                                                   "message": "no learnware 'abc'"}})

    c = _client(handler, retries=3, home=tmp_path)
    with pytest.raises(NotFoundError, match="no learnware 'abc'") as exc:
        c.get("abc")
    assert exc.value.status == 404 and len(calls) == 1
    with pytest.raises(SpecError, match="9 points"):
        c.search({"text": "x"})
    assert len(calls) == 2


def test_an_unreachable_dock_fails_after_bounded_retries(tmp_path) -> None:
    c = Client(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01, timeout=2,
               home=tmp_path, progress=False)
    with pytest.raises(ServiceUnavailableError, match="after 3 attempt"):
        c.list()


def test_uploads_are_not_retried_once_sent(tmp_path) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("slow", request=request)

    pkg = tmp_path / "p.zip"
    pkg.write_bytes(b"PK" + b"\0" * 100)
    c = _client(handler, retries=3, home=tmp_path)
    with pytest.raises(ServiceUnavailableError, match="not retried"):
        c.upload(pkg)
    assert len(calls) == 1
