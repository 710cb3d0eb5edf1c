"""Request dependencies: the dock, the caller's account, the client's address."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from learndock.server.accounts import AccountStore, Token, User
from learndock.server.errors import AuthenticationError, ForbiddenError
from learndock.server.security import RateLimiter

if TYPE_CHECKING:
    from learndock.market import Market
    from learndock.market.verification import VerificationQueue
    from learndock.server.settings import ServerSettings


@dataclass
class Dock:
    """Everything a request handler needs, built once by ``create_app``."""

    settings: ServerSettings
    market: Market
    accounts: AccountStore
    queue: VerificationQueue
    login_limit: RateLimiter
    upload_limit: RateLimiter
    search_limit: RateLimiter
    started_at: float = field(default_factory=time.time)
    demo: Any = None  # learndock.server.demo.DemoBuild while/after building


@dataclass(frozen=True)
class Principal:
    user: User
    token: Token

    @property
    def id(self) -> str:
        return self.user.id

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin


def get_dock(request: Request) -> Dock:
    return request.app.state.dock  # type: ignore[no-any-return]


def client_ip(request: Request) -> str:
    """The peer address (proxy headers are not trusted: put a proxy's own limits in front)."""
    return request.client.host if request.client else "unknown"


_bearer = HTTPBearer(auto_error=False, description="an API token: `ld_...` (from login, "
                                                     "POST /api/v1/tokens or `learndock tokens "
                                                     "create`)")


def optional_principal(
    request: Request,
    dock: Annotated[Dock, Depends(get_dock)],
    _doc: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> Principal | None:
    """The caller, if it sent a token. A token that is wrong, revoked or expired is a 401
    even where no account is needed (a client should know its token stopped working)."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise AuthenticationError("use the header `Authorization: Bearer <token>`",
                                  headers={"WWW-Authenticate": "Bearer"})
    user, token = dock.accounts.resolve(credential.strip())
    return Principal(user, token)


def require_principal(
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> Principal:
    if principal is None:
        raise AuthenticationError("this needs an API token (`Authorization: Bearer <token>`)",
                                  headers={"WWW-Authenticate": "Bearer"})
    return principal


def require_admin(principal: Annotated[Principal, Depends(require_principal)]) -> Principal:
    if not principal.is_admin:
        raise ForbiddenError("this needs an admin account")
    return principal


DockDep = Annotated[Dock, Depends(get_dock)]
MaybeUser = Annotated[Principal | None, Depends(optional_principal)]
CurrentUser = Annotated[Principal, Depends(require_principal)]
Admin = Annotated[Principal, Depends(require_admin)]
