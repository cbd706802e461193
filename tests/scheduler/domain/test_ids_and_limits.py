"""One id rule and one set of limits, read by the domain and the wire alike."""

from __future__ import annotations

import typing

import pytest
from msgspec import Meta

from grafos_scheduler import InvalidRequest
from support.internals import (
    ID_PATTERN,
    FieldError,
    check_id,
    id_from_hex,
    id_hex,
    new_id,
    parse_id,
)
from support.internals import limits as _limits
from support.internals import wire_models as _models


def test_ids_round_trip_through_their_hex_form() -> None:
    for value in (0, 1, 2**128 - 1, new_id()):
        text = id_hex(value)
        assert len(text) == 32
        assert text == text.lower()
        assert id_from_hex(text) == value == parse_id(text, "lease_id")


@pytest.mark.parametrize("text", ["A" * 32, "0" * 31, "0" * 33, "g" * 32, " " + "0" * 31, ""])
def test_one_parser_refuses_what_the_wire_refuses(text: str) -> None:
    with pytest.raises(InvalidRequest, match="lowercase hex"):
        id_from_hex(text)
    with pytest.raises(FieldError, match="lowercase hex"):
        parse_id(text, "lease_id")


@pytest.mark.parametrize("value", [-1, 2**128, True, 1.0, "1"])
def test_check_id_names_the_value(value: object) -> None:
    with pytest.raises(InvalidRequest, match="not an unsigned 128-bit integer"):
        check_id(value)


def test_the_wire_publishes_the_domains_limits() -> None:
    assert _models.ID_PATTERN == ID_PATTERN
    hints = typing.get_type_hints(_models.AcquireRequest, include_extras=True)

    def meta(name: str) -> Meta:
        return next(m for m in typing.get_args(hints[name])[1:] if isinstance(m, Meta))

    assert meta("ttl").le == _limits.MAX_TTL
    assert meta("slots").le == _limits.MAX_SLOTS
    assert (meta("priority").ge, meta("priority").le) == (
        _limits.MIN_PRIORITY,
        _limits.MAX_PRIORITY,
    )
    assert meta("job").pattern == _limits.NAME_PATTERN
    assert meta("job").max_length == _limits.MAX_NAME_LENGTH
    assert _models.MAX_CAUSE == _limits.MAX_CAUSE_LENGTH
    assert _models.INT64_MAX == _limits.MAX_FENCING_TOKEN


@pytest.mark.parametrize(
    "name", ["a", "A.b_c:d@e-f", "0" + "x" * 127], ids=["one", "every-symbol", "128"]
)
def test_names_the_rule_accepts(name: str) -> None:
    assert _limits.check_name(name, "job") == name


@pytest.mark.parametrize(
    "name", ["", "x" * 129, "-leading", ".x", "a b", "job\n", "ünï", "a/b", 3], ids=repr
)
def test_names_the_rule_refuses(name: object) -> None:
    with pytest.raises(InvalidRequest, match="job"):
        _limits.check_name(name, "job")
