"""Request bodies: read once as bytes, decoded once by the strict parser.

A route names its body model in its ``opt`` (:func:`body_of` declares it); it takes no
``data`` parameter, so Litestar never decodes the body itself. :func:`parse_request_body`
runs before every handler, and :mod:`._openapi` publishes the same models as the
routes' request bodies.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from typing import Any, TypeVar

from litestar import Request

from .._wire._models import RenewalEntry, RenewalsRequest
from .._wire._parsing import FieldError, escape, parse_body, parse_renewals
from . import _policy

__all__ = [
    "UnsupportedMediaType",
    "body_model",
    "body_of",
    "decode_body",
    "parse_request_body",
    "parsed_body",
    "parsed_renewals",
]

_M = TypeVar("_M")
_OPT_KEY = "body"
_STATE_KEY = "parsed_body"


class UnsupportedMediaType(Exception):
    """A request body that is not declared as JSON (415)."""


def body_of(model: type[Any]) -> dict[str, type[Any]]:
    """The route ``opt`` that declares ``model`` as the route's request body."""
    return {_OPT_KEY: model}


def body_model(opt: Mapping[str, Any]) -> type[Any] | None:
    """The body model a route's ``opt`` declares, or None for a route without a body."""
    model: type[Any] | None = opt.get(_OPT_KEY)
    return model


async def parse_request_body(request: Request[Any, Any, Any]) -> None:
    """Parse the body strictly, before the handler, so every refusal has our shape."""
    opt = request.route_handler.opt
    # Who may call the route is settled before anything is said about its body.
    _policy.check_route(opt, request.scope.get("user"))
    raw = await request.body()
    parsed = decode_body(
        body_model(opt),
        raw,
        request.headers.get("content-type", ""),
        f"{request.method} {request.url.path}",
    )
    if parsed is not None:
        request.scope["state"][_STATE_KEY] = parsed


def decode_body(model: type[Any] | None, raw: bytes, content_type: str, route: str) -> Any:
    """``raw`` decoded as ``model`` (None for a route without a body), the entries of a
    batch renewal, or the refusal (:class:`FieldError`, :class:`UnsupportedMediaType`)
    that names what is wrong; ``route`` is the method and path, for the messages."""
    if raw.strip():
        media_type = content_type.split(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            shown = escape(media_type) or "none"
            raise UnsupportedMediaType(f"{route}: the body must be application/json, not {shown}")
    if model is None:
        if raw.strip() not in (b"", b"{}"):
            raise FieldError(None, f"{route} takes no body")
        return None
    _check_utf8(raw)
    if model is RenewalsRequest:
        # Entry by entry: a bad entry is that entry's error, not the request's.
        return parse_renewals(raw)
    return parse_body(model, raw)


def _check_utf8(raw: bytes) -> None:
    """Refuse a body that is not plain UTF-8 (RFC 8259: JSON between systems is UTF-8).

    json.loads guesses the encoding of bytes, so it would take UTF-16, UTF-32 or a
    byte order mark; a NUL byte (never valid in JSON text) is what steers its guess.
    """
    if raw.startswith(codecs.BOM_UTF8):
        raise FieldError(None, "the body is not valid JSON: it starts with a byte order mark")
    if b"\x00" in raw:
        raise FieldError(None, "the body is not valid JSON: it holds a NUL byte")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FieldError(None, f"the body is not valid JSON: {exc}") from None


def parsed_body(request: Request[Any, Any, Any], model: type[_M]) -> _M:
    """The ``model`` that :func:`parse_request_body` decoded for this request."""
    body = request.scope["state"].get(_STATE_KEY)
    if not isinstance(body, model):  # a route reading a body its opt does not declare
        raise TypeError(f"{request.url.path} has no {model.__name__} body declared")
    return body


def parsed_renewals(request: Request[Any, Any, Any]) -> list[RenewalEntry | FieldError]:
    """The entries of a batch renewal, each parsed or the error that refused it."""
    body = request.scope["state"].get(_STATE_KEY)
    if not isinstance(body, list):
        raise TypeError(f"{request.url.path} has no batch renewal body declared")
    return body
