"""The strict parser for request bodies, and the C (msgspec) fast paths beside it.

:func:`parse_body` decodes a body into its wire model (``_models.py``) and enforces
the constraints written there as ``msgspec.Meta``: unknown fields, wrong types and
ranges, duplicate keys and lone surrogates are refused with one :class:`FieldError`
naming the field. The two hottest bodies (a renewal and an acquire) and the batch
renewal are decoded in C first when they are plainly valid; anything the strict parser
might judge differently goes to it.
"""

from __future__ import annotations

import functools
import json
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import attrs
import msgspec
from msgspec import Meta

from .._domain._errors import InvalidRequest
from .._domain._ids import id_from_hex
from .._domain._limits import (
    MAX_BATCH_RENEWALS,
    MAX_FENCING_TOKEN,
    MAX_PRIORITY,
    MAX_SLOTS,
    MAX_TTL,
    MAX_WORK_LOST_SECONDS,
    MIN_PRIORITY,
)
from .._wire._models import (
    AcquireRequest,
    JobName,
    ReasonName,
    RenewalEntry,
    RenewRequest,
)

__all__ = ["FieldError", "escape", "parse_body", "parse_id", "parse_renewals"]


def parse_id(text: str, field: str) -> int:
    """The 128-bit id in ``text``; :class:`FieldError` naming ``field`` otherwise."""
    try:
        return id_from_hex(text)
    except InvalidRequest:
        raise FieldError(field, f"{text!r} is not a 32-character lowercase hex id") from None


class FieldError(ValueError):
    """A request value that the API refuses; ``field`` names it (a dotted path)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


_M = TypeVar("_M")
_S = TypeVar("_S")


def _refuse_constant(name: str) -> float:
    raise FieldError(None, f"{name} is not valid JSON")


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    data: dict[str, object] = {}
    for key, value in pairs:
        if key in data:
            raise FieldError(escape(key), f"the field {key!r} appears more than once")
        data[key] = value
    return data


def escape(text: str) -> str:
    """``text`` with any lone surrogate written as ``\\udXXX``, so it encodes as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _refuse_surrogates(value: object, field: str | None) -> None:
    """Refuse a lone surrogate (``"\\ud800"`` in JSON) in any key or string of the body.

    Such a string is not Unicode text: it cannot be stored, logged or sent back.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise FieldError(
                field, f"{value[:80]!r} is not valid Unicode text (it holds a lone surrogate)"
            ) from None
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_surrogates(item, f"{field or ''}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            path = escape(key) if field is None else f"{field}.{escape(key)}"
            if escape(key) != key:
                raise FieldError(
                    path, f"the field name {key!r} is not valid Unicode text (lone surrogate)"
                )
            _refuse_surrogates(item, path)


def parse_body(model: type[_M], raw: bytes) -> _M:
    """Decode ``raw`` JSON into ``model``, refusing unknown fields, wrong types and ranges.

    Also refused: duplicate keys, and lone surrogates in any key or string. Raises
    :class:`FieldError` naming the first field at fault.
    """
    if model is RenewRequest:
        fast: object = _parse_renew_fast(raw)
        if fast is not None:
            return fast  # type: ignore[return-value]  # model is RenewRequest
    elif model is AcquireRequest:
        fast = _parse_acquire_fast(raw)
        if fast is not None:
            return fast  # type: ignore[return-value]  # model is AcquireRequest
    return _parse_body_strict(model, raw)


def _parse_body_strict(model: type[_M], raw: bytes) -> _M:
    data = _decode(raw) if raw.strip() else {}
    _refuse_surrogates(data, None)
    return _convert(model, data)


def _decode(raw: bytes) -> object:
    try:
        return json.loads(
            raw, parse_constant=_refuse_constant, object_pairs_hook=_refuse_duplicates
        )
    except FieldError:
        raise
    except (ValueError, RecursionError) as exc:
        raise FieldError(None, f"the body is not valid JSON: {exc}") from None


_Shape = tuple[tuple[tuple[str, object, bool], ...], frozenset[str]]
_SHAPES: dict[type[Any], _Shape] = {}


def _shape(model: type[Any]) -> _Shape:
    """``(name, type hint, required)`` per field of ``model``, and the field names;
    computed once per model.

    ``typing.get_type_hints`` evaluates the string annotations again at every call
    (about 150 µs for a renewal's body), so no request pays for it.
    """
    shape = _SHAPES.get(model)
    if shape is None:
        hints = typing.get_type_hints(model, include_extras=True)
        fields = tuple(
            (name, hints[name], attribute.default is attrs.NOTHING)
            for name, attribute in attrs.fields_dict(model).items()
        )
        shape = _SHAPES[model] = (fields, frozenset(name for name, _, _ in fields))
    return shape


# The C (msgspec) decoding of the two hottest bodies. msgspec checks the same shapes,
# types and ranges as the strict parser, but takes the last of duplicate keys where the
# strict parser refuses them; so a body is taken only if it holds no escape (which could
# spell a key another way) and every key occurs in the raw text exactly as often as it
# was decoded. Any other body is the strict parser's, which finds and names the fault.


class _FastRenew(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    fencing_token: Annotated[int, Meta(ge=1, le=MAX_FENCING_TOKEN)]
    reasons: list[ReasonName] | msgspec.UnsetType = msgspec.UNSET
    checkpoint_age: (
        Annotated[float, Meta(ge=0, le=MAX_WORK_LOST_SECONDS)] | msgspec.UnsetType | None
    ) = msgspec.UNSET


class _FastEntry(_FastRenew, forbid_unknown_fields=True, kw_only=True):
    # Checked by _parse_renewals_fast: msgspec's pattern check costs 0.7 µs an entry.
    lease_id: str


class _FastRenewals(msgspec.Struct, forbid_unknown_fields=True):
    leases: Annotated[list[_FastEntry], Meta(min_length=1, max_length=MAX_BATCH_RENEWALS)]


class _FastAcquire(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    job: JobName
    slots: Annotated[int, Meta(ge=1, le=MAX_SLOTS)]
    ttl: Annotated[float, Meta(gt=0, le=MAX_TTL)]
    priority: Annotated[int, Meta(ge=MIN_PRIORITY, le=MAX_PRIORITY)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    grace: Annotated[float, Meta(ge=0, le=MAX_TTL)] | msgspec.UnsetType = msgspec.UNSET


_FAST_ACQUIRE = msgspec.json.Decoder(_FastAcquire)
_FAST_RENEW = msgspec.json.Decoder(_FastRenew)
_FAST_RENEWALS = msgspec.json.Decoder(_FastRenewals)


def _decode_fast(decoder: msgspec.json.Decoder[_S], raw: bytes) -> _S | None:
    if b"\\" in raw:
        return None
    try:
        return decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _counted(raw: bytes, bodies: list[_FastRenew], keys: dict[bytes, int]) -> bool:
    """True if each renew key, and each of ``keys``, occurs in ``raw`` as often as it
    was decoded (``keys``: extra keys and how often each must occur)."""
    given = len(bodies)
    with_reasons = sum(1 for b in bodies if b.reasons is not msgspec.UNSET)
    with_age = sum(1 for b in bodies if b.checkpoint_age is not msgspec.UNSET)
    expected = {
        b'"fencing_token"': given,
        b'"reasons"': with_reasons,
        b'"checkpoint_age"': with_age,
        **keys,
    }
    return all(raw.count(key) == n for key, n in expected.items())


def _reasons(body: _FastRenew) -> list[ReasonName]:
    return [] if body.reasons is msgspec.UNSET else body.reasons


def _age(body: _FastRenew) -> float | None:
    return None if body.checkpoint_age is msgspec.UNSET else body.checkpoint_age


def _parse_renew_fast(raw: bytes) -> RenewRequest | None:
    """A plainly valid renew body, decoded in C; None for the strict parser to judge."""
    body = _decode_fast(_FAST_RENEW, raw)
    if body is None or not _counted(raw, [body], {}):
        return None
    return RenewRequest(body.fencing_token, _reasons(body), _age(body))


def _parse_acquire_fast(raw: bytes) -> AcquireRequest | None:
    """A plainly valid acquire body, decoded in C; None for the strict parser to judge."""
    body = _decode_fast(_FAST_ACQUIRE, raw)
    if body is None:
        return None
    # A name holds no quote, so each quoted key occurs in the text only as that key.
    expected = {
        b'"job"': 1,
        b'"slots"': 1,
        b'"ttl"': 1,
        b'"priority"': body.priority is not msgspec.UNSET,
        b'"grace"': body.grace is not msgspec.UNSET,
    }
    if not all(raw.count(key) == n for key, n in expected.items()):
        return None
    return AcquireRequest(
        job=body.job,
        slots=body.slots,
        ttl=body.ttl,
        priority=0 if body.priority is msgspec.UNSET else body.priority,
        grace=0.0 if body.grace is msgspec.UNSET else body.grace,
    )


def _parse_renewals_fast(raw: bytes) -> list[RenewalEntry | FieldError] | None:
    """A batch renewal in which every entry is valid, decoded in C; None for the strict
    parser to judge."""
    body = _decode_fast(_FAST_RENEWALS, raw)
    if body is None:
        return None
    leases = body.leases
    if not _counted(raw, list(leases), {b'"leases"': 1, b'"lease_id"': len(leases)}):
        return None
    for e in leases:
        # Exactly ID_PATTERN: 32 characters, each a lowercase hex digit.
        if len(e.lease_id) != 32 or e.lease_id.strip(_HEX_DIGITS):
            return None
    return [RenewalEntry(e.lease_id, e.fencing_token, _reasons(e), _age(e)) for e in leases]


_HEX_DIGITS = "0123456789abcdef"


def parse_renewals(raw: bytes) -> list[RenewalEntry | FieldError]:
    """Decode a batch renewal: the body strictly, then each entry on its own.

    The body's shape (an object with ``leases``, an array of 1 to
    :data:`MAX_BATCH_RENEWALS` items, nothing else) is checked first and raises
    :class:`FieldError`; an entry that is wrong becomes a ``FieldError`` in its place
    (its ``field`` is ``leases[i]...``), so one bad lease never fails the others.
    """
    fast = _parse_renewals_fast(raw)
    return fast if fast is not None else _parse_renewals_strict(raw)


def _parse_renewals_strict(raw: bytes) -> list[RenewalEntry | FieldError]:
    if not raw.strip():
        raise FieldError("leases", "the field 'leases' is required")
    data = _decode(raw)
    if not isinstance(data, dict):
        raise FieldError(None, f"the body must be a JSON object, not {_json_type(data)}")
    _refuse_surrogates(dict.fromkeys(data), None)
    for key in data:
        if key != "leases":
            raise FieldError(escape(str(key)), f"unknown field {key!r}")
    if "leases" not in data:
        raise FieldError("leases", "the field 'leases' is required")
    entries = data["leases"]
    if not isinstance(entries, list):
        raise FieldError("leases", f"expected an array, got {_json_type(entries)}")
    _check_length(Meta(min_length=1, max_length=MAX_BATCH_RENEWALS), entries, "leases")
    parsed: list[RenewalEntry | FieldError] = []
    for i, entry in enumerate(entries):
        field = f"leases[{i}]"
        try:
            _refuse_surrogates(entry, field)
            parsed.append(_convert(RenewalEntry, entry, field))
        except FieldError as exc:
            parsed.append(exc)
    return parsed


def _convert(model: type[_M], data: object, prefix: str | None = None) -> _M:
    if not isinstance(data, dict):
        if prefix is not None:
            raise FieldError(prefix, f"expected an object, got {_json_type(data)}")
        raise FieldError(None, f"the body must be a JSON object, not {_json_type(data)}")
    fields, names = _shape(model)
    at = "" if prefix is None else prefix + "."
    for key in data:
        if key not in names:
            raise FieldError(at + escape(str(key)), f"unknown field {key!r}")
    values: dict[str, object] = {}
    for name, hint, required in fields:
        if name not in data:
            if required:
                raise FieldError(at + name, f"the field {name!r} is required")
            continue
        values[name] = _check(hint, data[name], at + name)
    return model(**values)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


_Checker = Callable[[object, str], object]
_CHECKERS: dict[object, _Checker] = {}


def _check(hint: object, value: object, field: str) -> object:
    """``value`` if it has the type and meets the constraints of ``hint``."""
    try:
        checker = _CHECKERS.get(hint)
    except TypeError:  # an unhashable hint: compile it each time
        return _compile(hint)(value, field)
    if checker is None:
        checker = _CHECKERS[hint] = _compile(hint)
    return checker(value, field)


def _compile(hint: object) -> _Checker:
    """The checker of ``hint``: the type introspection done once, not per value."""
    meta: Meta | None = None
    if get_origin(hint) is Annotated:
        hint, *extras = get_args(hint)
        meta = next((m for m in extras if isinstance(m, Meta)), None)
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        nullable = type(None) in options
        (inner,) = [o for o in options if o is not type(None)]
        inner_check = _compile(inner)

        def optional(value: object, field: str) -> object:
            if value is None and nullable:
                return None
            return inner_check(value, field)

        return optional
    if origin is Literal:
        allowed = get_args(hint)
        shown = ", ".join(map(str, allowed))

        def literal(value: object, field: str) -> object:
            if value not in allowed or not isinstance(value, str):
                raise FieldError(field, f"{value!r} is not one of {shown}")
            return value

        return literal
    if origin is list:
        (item,) = get_args(hint)
        item_check = _compile(item)
        length = meta

        def array(value: object, field: str) -> object:
            if not isinstance(value, list):
                raise FieldError(field, f"expected an array, got {_json_type(value)}")
            if length is not None:
                _check_length(length, value, field)
            return [item_check(v, f"{field}[{i}]") for i, v in enumerate(value)]

        return array
    if isinstance(hint, type) and attrs.has(hint):
        model = hint
        return lambda value, field: _convert(model, value, field)
    base = _scalar(hint)
    if meta is None:
        return base
    constraints = meta

    def constrained(value: object, field: str) -> object:
        value = base(value, field)
        _check_meta(constraints, value, field)
        return value

    return constrained


def _scalar(hint: object) -> _Checker:
    if hint is str:

        def text(value: object, field: str) -> object:
            if not isinstance(value, str):
                raise FieldError(field, f"expected a string, got {_json_type(value)}")
            return value

        return text
    if hint is int:

        def integer(value: object, field: str) -> object:
            # bool is an int in Python, never in the API.
            if not isinstance(value, int) or isinstance(value, bool):
                raise FieldError(field, f"expected an integer, got {_json_type(value)}")
            return value

        return integer
    if hint is float:

        def number(value: object, field: str) -> object:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise FieldError(field, f"expected a number, got {_json_type(value)}")
            value = float(value)
            if not math.isfinite(value):
                raise FieldError(field, f"{value!r} is not a finite number")
            return value

        return number
    raise TypeError(f"no parser for {hint!r}")  # a model field of a type we do not know


def _python_pattern(pattern: str) -> str:
    """A JSON Schema ``pattern`` for :func:`re.search`: a final ``$`` becomes ``\\Z``."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + "\\Z"
    return pattern


def _check_length(meta: Meta, value: list[object], field: str) -> None:
    if meta.min_length is not None and len(value) < meta.min_length:
        raise FieldError(field, f"{len(value)} items are fewer than the minimum {meta.min_length}")
    if meta.max_length is not None and len(value) > meta.max_length:
        raise FieldError(field, f"{len(value)} items are more than the maximum {meta.max_length}")


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(_python_pattern(pattern))


def _check_meta(meta: Meta, value: object, field: str) -> None:
    if isinstance(value, int | float):
        if meta.ge is not None and value < meta.ge:
            raise FieldError(field, f"{value!r} is below the minimum {meta.ge}")
        if meta.gt is not None and value <= meta.gt:
            raise FieldError(field, f"{value!r} must be greater than {meta.gt}")
        if meta.le is not None and value > meta.le:
            raise FieldError(field, f"{value!r} is above the maximum {meta.le}")
    if isinstance(value, str):
        if meta.min_length is not None and len(value) < meta.min_length:
            raise FieldError(field, f"{value!r} is shorter than {meta.min_length} characters")
        if meta.max_length is not None and len(value) > meta.max_length:
            raise FieldError(
                field, f"{value[:40]!r}... is longer than {meta.max_length} characters"
            )
        # JSON Schema patterns are unanchored (search); ours anchor themselves with ^ $.
        if meta.pattern is not None and not _compiled(meta.pattern).search(value):
            raise FieldError(field, f"{value[:80]!r} does not match {meta.pattern}")
