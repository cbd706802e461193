"""Where the admin commands find the service: --url and the admin token.

``--url`` wins over ``GRAFOS_URL``; the admin token comes from ``--tokens FILE`` (its
``admin`` key) or else from ``GRAFOS_TOKEN``. A refusal by the service becomes one
line: :class:`Refused` (exit 1) for 403, 404, 409 and 410, :class:`UsageError` (exit 2)
for a bad request, a wrong token or a service that cannot be reached.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TypeVar

from grafos_scheduler import (
    AuthenticationFailed,
    LeaseGone,
    NotFound,
    PermissionDenied,
    RequestRejected,
    SchedulerClient,
    ServiceError,
    ServiceUnavailable,
    TokenConfig,
    TokenConfigError,
    TokenConflict,
)

from ._arguments import Refused, UsageError

__all__ = ["add_url_arguments", "call", "connect", "load_tokens", "service_url"]

_T = TypeVar("_T")


def add_url_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="base URL of a running service, e.g. http://127.0.0.1:8470 (GRAFOS_URL)"
    )
    parser.add_argument("--tokens", help="token file whose admin token to use (else GRAFOS_TOKEN)")


def load_tokens(path: str) -> TokenConfig:
    try:
        return TokenConfig.load(path)
    except TokenConfigError as exc:
        raise UsageError(str(exc)) from None


def service_url(args: argparse.Namespace) -> str | None:
    """``--url``, else ``GRAFOS_URL``, else None."""
    url: str | None = getattr(args, "url", None) or os.environ.get("GRAFOS_URL") or None
    return url


def connect(args: argparse.Namespace) -> SchedulerClient:
    """A client of the service named by the arguments and the environment, as the admin."""
    url = service_url(args)
    if url is None:
        raise UsageError("no service to talk to: pass --url or set GRAFOS_URL")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url {url!r} is not an http:// or https:// URL")
    if args.tokens is not None:
        token = load_tokens(args.tokens).admin_token
    elif os.environ.get("GRAFOS_TOKEN"):
        token = os.environ["GRAFOS_TOKEN"]
    else:
        raise UsageError(
            "--url needs the admin token: --tokens, the token file with it, or GRAFOS_TOKEN"
        )
    return SchedulerClient(url.rstrip("/"), token, timeout=10.0)


def call(client: SchedulerClient, request: Callable[[], _T]) -> _T:
    """Run one request; a refusal becomes one line (see the module docstring)."""
    try:
        return request()
    except ServiceUnavailable as exc:
        if exc.status == 0:
            reason = exc.__cause__ or exc.message
            raise UsageError(
                f"cannot reach the scheduler at {client.base_url}: {_reason(reason)}"
            ) from None
        raise Refused(f"the scheduler at {client.base_url} failed: {exc}") from None
    except AuthenticationFailed:
        raise UsageError(
            f"the scheduler at {client.base_url} refused the token (401): "
            "is it the admin token of that service?"
        ) from None
    except RequestRejected as exc:
        raise UsageError(f"the scheduler refused the request: {exc.message}") from None
    except (PermissionDenied, NotFound, TokenConflict, LeaseGone) as exc:
        raise Refused(f"refused: {exc}") from None
    except ServiceError as exc:
        raise Refused(f"refused: {exc}") from None


def _reason(error: object) -> str:
    text = str(error)
    # httpx wraps the socket's words: "[Errno 111] Connection refused".
    return text or type(error).__name__
