"""Cookie sessions, CSRF tokens and security headers of the web UI.

A session cookie holds a CSRF nonce and, once signed in, the secret of a ``login`` API token
(so a web session is revoked, expires and is resolved exactly like a bearer token). The cookie
is signed with the dock's signing key (HMAC-SHA256) -- tampering is detected, not trusted --
and set HttpOnly, SameSite=Lax, Secure over https. Every state-changing form carries the nonce
(signed double submit): a cross-site form cannot read it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "ld_session"
#: Matches the login token's default lifetime; the token's own expiry is what counts.
COOKIE_MAX_AGE = 30 * 86400
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, payload: dict[str, Any]) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def unsign(key: bytes, value: str | None) -> dict[str, Any] | None:
    """The payload of a cookie we signed, or None (absent, malformed or tampered)."""
    if not value or len(value) > 4096 or "." not in value:
        return None
    body, _, mac = value.rpartition(".")
    want = hmac.new(key, body.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(want, _unb64(mac)):
            return None
        data = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Session:
    """What the cookie says; ``dirty`` when the response must set it again."""

    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    token: str | None = None
    flash: str | None = None
    dirty: bool = False

    @classmethod
    def load(cls, key: bytes, value: str | None) -> Session:
        data = unsign(key, value)
        if data is None or not isinstance(data.get("c"), str) or len(data["c"]) < 32:
            return cls(dirty=True)
        tok = data.get("t")
        flash = data.get("f")
        return cls(csrf=data["c"], token=tok if isinstance(tok, str) else None,
                   flash=flash if isinstance(flash, str) else None)

    def dump(self, key: bytes) -> str:
        payload: dict[str, Any] = {"c": self.csrf}
        if self.token:
            payload["t"] = self.token
        if self.flash:
            payload["f"] = self.flash
        return sign(key, payload)

    def check_csrf(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf.encode(), str(sent).encode())


class SecurityHeaders:
    """Adds nosniff and a referrer policy to every response, and the strict CSP plus
    ``X-Frame-Options: DENY`` to the web UI's (the API's Swagger page loads its own scripts)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        web = not (path.startswith("/api/") or path.startswith("/beimingwu"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [(b"x-content-type-options", b"nosniff"),
                         (b"referrer-policy", b"same-origin")]
                if web:
                    extra += [(b"content-security-policy", CSP.encode()),
                              (b"x-frame-options", b"DENY")]
                headers += [(k, v) for k, v in extra if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
