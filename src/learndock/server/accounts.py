"""Accounts and API tokens in the market's database (tables of migration 0003).

Used by the server (register, login, bearer tokens) and by the operator commands
(``learndock users create``, ``learndock tokens create/revoke``). Returned records never hold
a password hash or a token hash; a token's secret exists only in :class:`NewToken`, once.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from learndock.market import schema as t
from learndock.market.db import new_id, write_txn
from learndock.server.errors import (
    ApiNotFoundError,
    AuthenticationError,
    ConflictError,
    ValidationFailedError,
)
from learndock.server.security import (
    TOKEN_SHOWN,
    Passwords,
    looks_like_token,
    new_token,
    token_hash,
)

ROLES = ("user", "admin")
DAY = 86400.0
#: ``local@domain.tld``, no spaces or control characters; a full RFC 5322 parser is not the
#: point (the address is an account name here, not mailed).
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
#: ``last_used_at`` is written at most this often per token (reads stay reads).
LAST_USED_GRANULARITY_S = 60.0


def normalise_email(email: str) -> str:
    e = (email or "").strip().lower()
    if len(e) > 254 or not _EMAIL.match(e):
        raise ValidationFailedError("not a valid e-mail address", details={"field": "email"})
    return e


def check_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValidationFailedError(
            f"a password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters",
            details={"field": "password"})
    if "\x00" in password:
        raise ValidationFailedError("a password cannot contain NUL characters",
                                    details={"field": "password"})
    return password


def check_name(name: str) -> str:
    name = (name or "").strip()
    if len(name) > 100 or not name.isprintable():
        raise ValidationFailedError("a token name has at most 100 printable characters",
                                    details={"field": "name"})
    return name


@dataclass(frozen=True)
class User:
    id: str
    email: str
    role: str
    created_at: float
    last_login_at: float | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Token:
    id: str
    user_id: str
    name: str
    kind: str
    prefix: str
    created_at: float
    expires_at: float
    last_used_at: float | None
    revoked_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NewToken:
    """A token just created: ``secret`` is shown to its owner once and stored nowhere."""

    secret: str
    token: Token


def _user(row: Any) -> User:
    return User(row["id"], row["email"], row["role"], float(row["created_at"]),
                None if row["last_login_at"] is None else float(row["last_login_at"]))


def _token(row: Any) -> Token:
    return Token(row["id"], row["user_id"], row["name"], row["kind"], row["prefix"],
                 float(row["created_at"]), float(row["expires_at"]),
                 None if row["last_used_at"] is None else float(row["last_used_at"]),
                 None if row["revoked_at"] is None else float(row["revoked_at"]))


class AccountStore:
    def __init__(self, engine: Engine, passwords: Passwords | None = None, *,
                 token_ttl_days: float = 90.0, login_token_ttl_days: float = 30.0) -> None:
        self.engine = engine
        self.passwords = passwords or Passwords()
        self.token_ttl_s = token_ttl_days * DAY
        self.login_token_ttl_s = login_token_ttl_days * DAY

    # ------------------------------------------------------------------ users
    def create_user(self, email: str, password: str, role: str = "user") -> User:
        email = normalise_email(email)
        check_password(password)
        if role not in ROLES:
            raise ValidationFailedError(f"role must be one of {list(ROLES)}")
        pw_hash = self.passwords.hash(password)
        uid, now = new_id(), time.time()

        def write(conn: Connection) -> None:
            conn.execute(insert(t.users).values(id=uid, email=email, password_hash=pw_hash,
                                                role=role, created_at=now, last_login_at=None))

        try:
            write_txn(self.engine, write)
        except IntegrityError:
            raise ConflictError("an account with this e-mail address exists") from None
        return User(uid, email, role, now, None)

    def get_user(self, user_id: str) -> User:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.users).where(t.users.c.id == user_id)).mappings().first()
        if row is None:
            raise ApiNotFoundError(f"no user {user_id!r}")
        return _user(row)

    def find_user(self, email: str) -> User:
        e = normalise_email(email)
        with self.engine.connect() as conn:
            row = conn.execute(select(t.users).where(t.users.c.email == e)).mappings().first()
        if row is None:
            raise ApiNotFoundError(f"no account for {e}")
        return _user(row)

    def authenticate(self, email: str, password: str) -> User:
        """The account for these credentials; one message for every failure (no hint which
        part was wrong, nor whether the account exists)."""
        wrong = AuthenticationError("wrong e-mail address or password")
        try:
            e = normalise_email(email)
        except ValidationFailedError:
            self.passwords.verify(None, password or "")
            raise wrong from None
        with self.engine.connect() as conn:
            row = conn.execute(select(t.users).where(t.users.c.email == e)).mappings().first()
        stored = row["password_hash"] if row is not None else None
        if not self.passwords.verify(stored, password or "") or row is None:
            raise wrong
        now = time.time()
        values: dict[str, Any] = {"last_login_at": now}
        if self.passwords.needs_rehash(stored):
            values["password_hash"] = self.passwords.hash(password)
        write_txn(self.engine, lambda conn: conn.execute(
            update(t.users).where(t.users.c.id == row["id"]).values(**values)))
        return _user({**row, "last_login_at": now})

    def list_users(self, page: int = 0, page_size: int = 50) -> tuple[list[User], int]:
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(t.users)).scalar_one()
            rows = conn.execute(
                select(t.users).order_by(t.users.c.created_at, t.users.c.id)
                .offset(page * page_size).limit(page_size)
            ).mappings().all()
        return [_user(r) for r in rows], int(total)

    def set_role(self, user_id: str, role: str) -> User:
        if role not in ROLES:
            raise ValidationFailedError(f"role must be one of {list(ROLES)}")

        def write(conn: Connection) -> None:
            row = conn.execute(select(t.users).where(t.users.c.id == user_id)).mappings().first()
            if row is None:
                raise ApiNotFoundError(f"no user {user_id!r}")
            if row["role"] == "admin" and role != "admin":
                admins = conn.execute(
                    select(func.count()).select_from(t.users).where(t.users.c.role == "admin")
                ).scalar_one()
                if admins <= 1:
                    raise ConflictError("cannot remove the last admin")
            conn.execute(update(t.users).where(t.users.c.id == user_id).values(role=role))

        write_txn(self.engine, write)
        return self.get_user(user_id)

    def count_users(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.users.c.role, func.count()).group_by(t.users.c.role))
            out = dict.fromkeys(ROLES, 0)
            out.update({str(r): int(n) for r, n in rows})
        return out

    # ------------------------------------------------------------------ tokens
    def create_token(self, user_id: str, name: str = "", *, kind: str = "api",
                     ttl_days: float | None = None) -> NewToken:
        name = check_name(name)
        if ttl_days is not None and not 0 < ttl_days <= 3650:
            raise ValidationFailedError("a token lives 0 to 3650 days")
        ttl = ttl_days * DAY if ttl_days is not None else (
            self.login_token_ttl_s if kind == "login" else self.token_ttl_s)
        secret = new_token()
        now = time.time()
        tok = Token(new_id(), user_id, name or kind, kind, secret[:TOKEN_SHOWN], now, now + ttl,
                    None, None)

        def write(conn: Connection) -> None:
            if conn.execute(select(t.users.c.id).where(t.users.c.id == user_id)).first() is None:
                raise ApiNotFoundError(f"no user {user_id!r}")
            conn.execute(insert(t.api_tokens).values(
                id=tok.id, user_id=user_id, name=tok.name, kind=kind, token_hash=token_hash(secret),
                prefix=tok.prefix, created_at=now, expires_at=tok.expires_at, last_used_at=None,
                revoked_at=None))

        write_txn(self.engine, write)
        return NewToken(secret, tok)

    def resolve(self, secret: str) -> tuple[User, Token]:
        """The account and token for a bearer secret; 401 if unknown, revoked or expired."""
        if not secret or not looks_like_token(secret):
            raise AuthenticationError("invalid API token")
        h = token_hash(secret)
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.api_tokens, t.users.c.email, t.users.c.role,
                       t.users.c.created_at.label("user_created_at"), t.users.c.last_login_at)
                .select_from(t.api_tokens.join(t.users, t.users.c.id == t.api_tokens.c.user_id))
                .where(t.api_tokens.c.token_hash == h)
            ).mappings().first()
        now = time.time()
        if row is None:
            raise AuthenticationError("invalid API token")
        if row["revoked_at"] is not None:
            raise AuthenticationError("this API token was revoked")
        if float(row["expires_at"]) <= now:
            raise AuthenticationError("this API token has expired")
        last = row["last_used_at"]
        if last is None or now - float(last) > LAST_USED_GRANULARITY_S:
            write_txn(self.engine, lambda conn: conn.execute(
                update(t.api_tokens).where(t.api_tokens.c.id == row["id"])
                .values(last_used_at=now)))
        user = User(row["user_id"], row["email"], row["role"], float(row["user_created_at"]),
                    None if row["last_login_at"] is None else float(row["last_login_at"]))
        return user, _token({**row, "last_used_at": now})

    def list_tokens(self, user_id: str, *, include_revoked: bool = False) -> list[Token]:
        q = select(t.api_tokens).where(t.api_tokens.c.user_id == user_id)
        if not include_revoked:
            q = q.where(t.api_tokens.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(t.api_tokens.c.created_at)).mappings().all()
        return [_token(r) for r in rows]

    def revoke_token(self, token_id: str, *, user_id: str | None = None) -> Token:
        """Revoke a token (only ``user_id``'s, when given: another account's token is reported
        as not found, so ids of others' tokens cannot be probed)."""
        def write(conn: Connection) -> Any:
            cond = [t.api_tokens.c.id == token_id]
            if user_id is not None:
                cond.append(t.api_tokens.c.user_id == user_id)
            row = conn.execute(select(t.api_tokens).where(and_(*cond))).mappings().first()
            if row is None:
                raise ApiNotFoundError(f"no token {token_id!r}")
            if row["revoked_at"] is None:
                now = time.time()
                conn.execute(update(t.api_tokens).where(t.api_tokens.c.id == token_id)
                             .values(revoked_at=now))
                row = {**row, "revoked_at": now}
            return row

        return _token(write_txn(self.engine, write))
