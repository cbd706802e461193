"""The published OpenAPI schema: request bodies and the models' constraints.

Routes take no ``data`` parameter (the strict parser decodes each body once, see
:mod:`._body`), so Litestar does not know their bodies. :func:`document` publishes them
from the same annotations the parser enforces, with ``additionalProperties: false``,
and adds to the answer models the ``Meta`` constraints that Litestar's attrs plugin
drops: without them a client (or schemathesis) cannot tell which values the API accepts.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

import attrs
from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Reference, RequestBody, Schema
from litestar.routes import HTTPRoute
from msgspec import Meta

from .._wire._models import (
    AcquireResult,
    AuditHeadView,
    AuditPage,
    AuditRecordView,
    AuditVerificationView,
    DeferredVictimView,
    ErrorBody,
    Health,
    HoldView,
    LeaseList,
    LeaseView,
    PendingPreemptionView,
    PreemptionDecisionView,
    RenewResult,
    TicketList,
    TicketView,
    TicketWaitView,
    VictimView,
    WatchAnswer,
    WatchEvent,
)
from ._body import body_model

__all__ = ["document"]

_RESPONSE_MODELS: tuple[type[Any], ...] = (
    AcquireResult,
    AuditHeadView,
    AuditPage,
    AuditRecordView,
    AuditVerificationView,
    DeferredVictimView,
    ErrorBody,
    Health,
    HoldView,
    LeaseList,
    LeaseView,
    PendingPreemptionView,
    PreemptionDecisionView,
    RenewResult,
    TicketList,
    TicketView,
    TicketWaitView,
    VictimView,
    WatchAnswer,
    WatchEvent,
)


def document(app: Litestar) -> None:
    """Complete ``app``'s OpenAPI schema in place (before it is first served)."""
    schema = app.openapi_schema
    schemas = schema.components.schemas
    paths = schema.paths or {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format not in paths:
            continue
        path_item = paths[route.path_format]
        for handler in route.route_handlers:
            model = body_model(handler.opt)
            if model is None or not handler.resolve_include_in_schema():
                continue
            schemas[model.__name__] = request_schema(model)
            for method in handler.http_methods:
                operation = getattr(path_item, method.lower(), None)
                if operation is None:
                    continue
                operation.request_body = RequestBody(
                    content={
                        "application/json": OpenAPIMediaType(
                            schema=Reference(ref=f"#/components/schemas/{model.__name__}")
                        )
                    },
                    # An empty body is an empty object: required only if a field is.
                    required=any(a.default is attrs.NOTHING for a in attrs.fields(model)),
                )
    for model in _RESPONSE_MODELS:
        component = schemas.get(model.__name__)
        if component is not None:
            _constrain(model, component)


def request_schema(model: type[Any]) -> Schema:
    """The JSON Schema of an attrs request model, exactly what ``parse_body`` accepts."""
    hints = typing.get_type_hints(model, include_extras=True)
    fields = attrs.fields(model)
    return Schema(
        type=OpenAPIType.OBJECT,
        title=model.__name__,
        properties={a.name: _value_schema(hints[a.name]) for a in fields},
        required=[a.name for a in fields if a.default is attrs.NOTHING],
        additional_properties=False,
    )


def _value_schema(hint: object) -> Schema:
    meta: Meta | None = None
    if typing.get_origin(hint) is Annotated:
        hint, *extras = typing.get_args(hint)
        meta = next((m for m in extras if isinstance(m, Meta)), None)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [o for o in typing.get_args(hint) if o is not type(None)]
        return Schema(one_of=[_value_schema(inner), Schema(type=OpenAPIType.NULL)])
    if origin is Literal:
        schema = Schema(type=OpenAPIType.STRING, enum=list(typing.get_args(hint)))
    elif origin is list:
        (item,) = typing.get_args(hint)
        schema = Schema(type=OpenAPIType.ARRAY, items=_value_schema(item))
        if meta is not None:  # an array's length: minItems and maxItems
            schema.min_items, schema.max_items = meta.min_length, meta.max_length
            return schema
    elif isinstance(hint, type) and attrs.has(hint):
        return request_schema(hint)  # a nested object, as strict as the body
    elif hint is str:
        schema = Schema(type=OpenAPIType.STRING)
    elif hint is int:
        schema = Schema(type=OpenAPIType.INTEGER)
    elif hint is float:
        schema = Schema(type=OpenAPIType.NUMBER)
    else:  # pragma: no cover - a request field of a type the strict parser does not know
        raise TypeError(f"no schema for {hint!r}")
    if meta is not None:
        _apply(meta, schema)
    return schema


def _apply(meta: Meta, target: Schema) -> None:
    target.minimum = meta.ge if meta.ge is not None else target.minimum
    target.maximum = meta.le if meta.le is not None else target.maximum
    if meta.gt is not None:
        target.exclusive_minimum = meta.gt
    target.min_length = meta.min_length if meta.min_length is not None else target.min_length
    target.max_length = meta.max_length if meta.max_length is not None else target.max_length
    target.pattern = meta.pattern if meta.pattern is not None else target.pattern
    if meta.description and not target.description:
        target.description = meta.description


def _constrain(model: type[Any], component: Schema) -> None:
    """Put ``model``'s ``Meta`` constraints into the component Litestar generated."""
    hints = typing.get_type_hints(model, include_extras=True)
    for name, prop in (component.properties or {}).items():
        meta = _meta_of(hints[name])
        if meta is None or not isinstance(prop, Schema):
            continue
        target = prop
        if prop.one_of:  # an optional value: constrain the non-null branch
            branches = [b for b in prop.one_of if isinstance(b, Schema) and b.type != "null"]
            if len(branches) != 1:
                continue
            target = branches[0]
        if target.type == OpenAPIType.ARRAY and isinstance(target.items, Schema):
            target = target.items
        _apply(meta, target)


def _meta_of(hint: object) -> Meta | None:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        # An optional value: the constraints of its one non-null type.
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) != 1:
            return None
        hint = options[0]
    if typing.get_origin(hint) is Annotated:
        for extra in typing.get_args(hint)[1:]:
            if isinstance(extra, Meta):
                return extra
    return None
