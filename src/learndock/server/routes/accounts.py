"""Accounts and tokens: register, login, logout, me, API tokens."""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool

from learndock.server.accounts import Token, User, normalise_email
from learndock.server.deps import CurrentUser, DockDep, client_ip
from learndock.server.errors import ForbiddenError, ValidationFailedError
from learndock.server.models import (
    ID_PATTERN,
    Credentials,
    LoginOut,
    NewTokenOut,
    TokenCreate,
    TokenOut,
    UserOut,
)

router = APIRouter(tags=["accounts"])
TokenId = Annotated[str, Path(pattern=ID_PATTERN)]


def user_out(u: User) -> UserOut:
    return UserOut(**u.to_dict())


def token_out(t: Token) -> TokenOut:
    return TokenOut(**{k: v for k, v in t.to_dict().items() if k != "user_id"})


def _limit_login(dock: DockDep, request: Request, email: str) -> None:
    keys = [f"ip:{client_ip(request)}"]
    with contextlib.suppress(ValidationFailedError):
        keys.append(f"account:{normalise_email(email)}")
    dock.login_limit.take(*keys)


@router.post("/auth/register", status_code=201, response_model=UserOut,
             summary="Create an account (role user)")
async def register(body: Credentials, request: Request, dock: DockDep) -> UserOut:
    if not dock.settings.allow_registration:
        raise ForbiddenError("registration is closed on this dock; ask an admin for an account")
    _limit_login(dock, request, body.email)
    user = await run_in_threadpool(dock.accounts.create_user, body.email, body.password, "user")
    return user_out(user)


@router.post("/auth/login", response_model=LoginOut,
             summary="Exchange e-mail and password for an API token")
async def login(body: Credentials, request: Request, dock: DockDep) -> LoginOut:
    _limit_login(dock, request, body.email)
    user = await run_in_threadpool(dock.accounts.authenticate, body.email, body.password)
    new = await run_in_threadpool(dock.accounts.create_token, user.id, "login", kind="login")
    return LoginOut(token=new.secret, token_id=new.token.id, expires_at=new.token.expires_at,
                    user=user_out(user))


@router.post("/auth/logout", status_code=204, response_class=Response,
             summary="Revoke the token this request carries")
def logout(me: CurrentUser, dock: DockDep) -> Response:
    dock.accounts.revoke_token(me.token.id, user_id=me.id)
    return Response(status_code=204)


@router.get("/me", response_model=UserOut, summary="The caller's account")
def whoami(me: CurrentUser) -> UserOut:
    return user_out(me.user)


@router.get("/tokens", response_model=list[TokenOut],
            summary="The caller's live tokens (no secrets)")
def list_tokens(me: CurrentUser, dock: DockDep) -> list[TokenOut]:
    return [token_out(t) for t in dock.accounts.list_tokens(me.id)]


@router.post("/tokens", status_code=201, response_model=NewTokenOut,
             summary="Create an API token (its secret is shown once)")
def create_token(body: TokenCreate, me: CurrentUser, dock: DockDep) -> NewTokenOut:
    new = dock.accounts.create_token(me.id, body.name, kind="api", ttl_days=body.expires_in_days)
    return NewTokenOut(**token_out(new.token).model_dump(), token=new.secret)


@router.delete("/tokens/{token_id}", status_code=204, response_class=Response,
               summary="Revoke one of the caller's tokens")
def revoke_token(token_id: TokenId, me: CurrentUser, dock: DockDep) -> Response:
    dock.accounts.revoke_token(token_id, user_id=me.id)
    return Response(status_code=204)
