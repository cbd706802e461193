"""Request bodies: read once as bytes, decoded once by the strict parser.

A route names its body model in its ``opt`` (:func:`body_of` declares it); it takes no
``data`` parameter, so Litestar never decodes the body itself. :func:`parse_request_body`
runs before every handler, and :mod:`._openapi` publishes the same models as the
routes' request bodies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from litestar import Request

from .._wire._models import FieldError, escape, parse_body

__all__ = ["UnsupportedMediaType", "body_model", "body_of", "parse_request_body", "parsed_body"]

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
    model = body_model(request.route_handler.opt)
    raw = await request.body()
    if raw.strip():
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            shown = escape(media_type) or "none"
            raise UnsupportedMediaType(
                f"{request.method} {request.url.path}: the body must be application/json, "
                f"not {shown}"
            )
    if model is None:
        if raw.strip() not in (b"", b"{}"):
            raise FieldError(None, f"{request.method} {request.url.path} takes no body")
        return
    request.scope["state"][_STATE_KEY] = parse_body(model, raw)


def parsed_body(request: Request[Any, Any, Any], model: type[_M]) -> _M:
    """The ``model`` that :func:`parse_request_body` decoded for this request."""
    body = request.scope["state"].get(_STATE_KEY)
    if not isinstance(body, model):  # a route reading a body its opt does not declare
        raise TypeError(f"{request.url.path} has no {model.__name__} body declared")
    return body
