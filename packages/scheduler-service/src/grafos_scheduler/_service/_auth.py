"""Bearer tokens per principal: one admin, and workers by name.

The token file is TOML::

    admin = "a-long-random-secret"

    [workers]
    ingest-1 = "another-long-random-secret"
    ingest-2 = "..."

Tokens are compared in constant time and never logged, printed or put in an error
message: errors name the file and the key, never the value.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

import attrs

from .._domain._errors import SchedulerError
from .._domain._limits import NAME_PATTERN

__all__ = [
    "ADMIN",
    "Authenticator",
    "Principal",
    "TokenConfig",
    "TokenConfigError",
]

ADMIN = "admin"
MIN_TOKEN_LENGTH = 16
_NAME_RE = re.compile(NAME_PATTERN)  # the domain's name rule


class TokenConfigError(SchedulerError, ValueError):
    """The token file is missing, unreadable or malformed (the message never holds a token)."""


@attrs.frozen
class Principal:
    """Who a request comes from."""

    name: str
    is_admin: bool

    def may_act_on(self, holder: str) -> bool:
        """Whether this principal may act on a lease held by ``holder``."""
        return self.is_admin or self.name == holder


class Authenticator(Protocol):
    """What the server authenticates with: a :class:`TokenConfig`, or a holder of one
    that can swap it while serving (``serve`` reloads its token file on SIGHUP)."""

    def authenticate(self, authorization: str | None) -> Principal | None: ...


def _as_dict(mapping: Mapping[str, str]) -> dict[str, str]:
    return dict(mapping)  # a private copy: the caller's dict cannot change our tokens


@attrs.frozen(repr=False)
class TokenConfig:
    """The admin token and the worker tokens by name."""

    admin_token: str
    worker_tokens: Mapping[str, str] = attrs.field(converter=_as_dict)
    # Pre-encoded for hmac.compare_digest, which refuses non-ASCII str.
    _table: tuple[tuple[bytes, Principal], ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        _check_token(self.admin_token, ADMIN)
        seen = {self.admin_token}
        for name, token in self.worker_tokens.items():
            if not _NAME_RE.fullmatch(name) or name == ADMIN:
                raise TokenConfigError(f"worker name {name!r} is not a valid principal name")
            _check_token(token, f"workers.{name}")
            if token in seen:
                raise TokenConfigError(f"the token of workers.{name} is not unique")
            seen.add(token)
        table = [(self.admin_token.encode(), Principal(ADMIN, is_admin=True))]
        table += [
            (token.encode(), Principal(name, is_admin=False))
            for name, token in self.worker_tokens.items()
        ]
        object.__setattr__(self, "_table", tuple(table))

    def __repr__(self) -> str:  # never show the tokens
        return f"TokenConfig(workers={sorted(self.worker_tokens)!r})"

    @property
    def workers(self) -> list[str]:
        return sorted(self.worker_tokens)

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal whose token is in an ``Authorization: Bearer`` header, or None."""
        if authorization is None:
            return None
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return None
        candidate = presented.strip().encode("utf-8", "surrogateescape")
        found: Principal | None = None
        # Compare against every token, so the time taken does not tell which one matched.
        for token, principal in self._table:
            if hmac.compare_digest(candidate, token) and found is None:
                found = principal
        return found

    @classmethod
    def generate(cls, workers: Iterable[str]) -> TokenConfig:
        """Fresh random tokens for an admin and the named workers."""
        return cls(secrets.token_urlsafe(32), {w: secrets.token_urlsafe(32) for w in workers})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TokenConfig:
        """Read a token file; :class:`TokenConfigError` names what is wrong."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise TokenConfigError(
                f"cannot read token file {str(path)!r}: {exc.strerror}"
            ) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise TokenConfigError(f"token file {str(path)!r} is not valid TOML: {exc}") from None
        unknown = set(raw) - {"admin", "workers"}
        if unknown:
            raise TokenConfigError(
                f"token file {str(path)!r} has unknown keys: {', '.join(sorted(unknown))}"
            )
        admin = raw.get("admin")
        if not isinstance(admin, str):
            raise TokenConfigError(f"token file {str(path)!r} needs a string 'admin' token")
        workers = raw.get("workers", {})
        if not isinstance(workers, dict):
            raise TokenConfigError(f"token file {str(path)!r}: 'workers' must be a table")
        for name, token in workers.items():
            if not isinstance(token, str):
                raise TokenConfigError(
                    f"token file {str(path)!r}: workers.{name} must be a string token"
                )
        try:
            return cls(admin, workers)
        except TokenConfigError as exc:
            raise TokenConfigError(f"token file {str(path)!r}: {exc}") from None

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Write this config as a token file readable only by its owner."""
        lines = [f"admin = {_toml_str(self.admin_token)}", "", "[workers]"]
        lines += [f"{_toml_str(n)} = {_toml_str(t)}" for n, t in sorted(self.worker_tokens.items())]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_token(token: object, key: str) -> None:
    if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
        raise TokenConfigError(
            f"the token of {key} must be a string of >= {MIN_TOKEN_LENGTH} chars"
        )
    if any(c.isspace() or not c.isprintable() for c in token):
        raise TokenConfigError(f"the token of {key} must not contain spaces or control characters")
