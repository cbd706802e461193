"""The batch renewal body: the shape strictly, each entry on its own."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grafos_scheduler._wire._models import RenewalEntry
from grafos_scheduler._wire._parsing import (
    FieldError,
    _parse_renewals_fast,
    _parse_renewals_strict,
    parse_renewals,
)

LEASE = "0123456789abcdef0123456789abcdef"


def _raw(value: object) -> bytes:
    return json.dumps(value).encode()


def test_each_entry_is_parsed_on_its_own() -> None:
    parsed = parse_renewals(
        _raw(
            {
                "leases": [
                    {"lease_id": LEASE, "fencing_token": 3, "reasons": ["checkpoint_in_progress"]},
                    {"lease_id": "XYZ", "fencing_token": 3},
                    {"lease_id": LEASE, "fencing_token": 3, "extra": 1},
                    {"lease_id": LEASE},
                    "not an object",
                    {"lease_id": LEASE, "fencing_token": 1},
                ]
            }
        )
    )
    assert parsed[0] == RenewalEntry(LEASE, 3, ["checkpoint_in_progress"])
    errors = parsed[1:5]
    assert all(isinstance(e, FieldError) for e in errors)
    assert [e.field for e in errors if isinstance(e, FieldError)] == [
        "leases[1].lease_id",
        "leases[2].extra",
        "leases[3].fencing_token",
        "leases[4]",
    ]
    assert parsed[5] == RenewalEntry(LEASE, 1, [])


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (b"", "leases", "required"),
        (_raw({}), "leases", "required"),
        (_raw({"leases": []}), "leases", "0 items are fewer than the minimum 1"),
        (_raw({"leases": [{}] * 1001}), "leases", "1001 items are more than the maximum 1000"),
        (_raw({"leases": {}}), "leases", "expected an array"),
        (_raw({"leases": [], "more": 1}), "more", "unknown field"),
        (_raw([1]), None, "must be a JSON object"),
        (b"{", None, "not valid JSON"),
    ],
)
def test_the_body_shape_is_refused_whole(body: bytes, field: str | None, message: str) -> None:
    with pytest.raises(FieldError, match=message) as caught:
        parse_renewals(body)
    assert caught.value.field == field


# The C fast path (msgspec) must decide exactly as the strict parser: any body it
# takes, it parses to the same entries; any other it leaves to the strict parser.
_KEYS = [
    "lease_id",
    "fencing_token",
    "reasons",
    "checkpoint_age",
    "lease\\u005fid",
    "fencing\\u005ftoken",
    "extra",
]
_VALUES = st.one_of(
    st.just(LEASE),
    st.just(LEASE.upper()),
    st.sampled_from([LEASE[:-1], LEASE + "0", "g" + LEASE[1:], " " + LEASE[1:], LEASE[:-1] + "_"]),
    st.integers(-2, 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.just([]),
    st.just(["checkpoint_in_progress"]),
    st.just(["operator_hold", "checkpoint_in_progress"]),
    st.just(["bogus"]),
    st.just("\ud800"),
)


@st.composite
def _entry(draw: st.DrawFn) -> list[tuple[str, object]]:
    """A valid entry, then (sometimes) a key repeated, added, dropped or given a bad
    value: the fast path must take the valid ones and leave the others."""
    members: list[tuple[str, object]] = [
        ("lease_id", LEASE),
        ("fencing_token", draw(st.integers(1, 2**63 - 1))),
    ]
    if draw(st.booleans()):
        members.append(("reasons", draw(st.sampled_from([[], ["checkpoint_in_progress"]]))))
    if draw(st.booleans()):
        members.append(("checkpoint_age", draw(st.one_of(st.none(), st.floats(0, 1e6)))))
    for _ in range(draw(st.integers(0, 2)) if draw(st.booleans()) else 0):
        at = draw(st.integers(0, len(members)))
        change = draw(st.sampled_from(["add", "replace", "drop"]))
        if change == "add":
            members.insert(at, (draw(st.sampled_from(_KEYS)), draw(_VALUES)))
        elif members and change == "replace":
            key = members[min(at, len(members) - 1)][0]
            members[min(at, len(members) - 1)] = (key, draw(_VALUES))
        elif members:
            members.pop(min(at, len(members) - 1))
    return members


_ENTRY = _entry()


def _text(entries: list[list[tuple[str, object]]]) -> bytes:
    # Written by hand, so that entries may repeat a key or carry an escaped one.
    def member(key: str, value: object) -> str:
        return f'"{key}":{json.dumps(value)}'

    items = ["{" + ",".join(member(k, v) for k, v in entry) + "}" for entry in entries]
    return ('{"leases":[' + ",".join(items) + "]}").encode()


def _shape(parsed: list[RenewalEntry | FieldError]) -> list[object]:
    return [
        (type(p).__name__, p.field, p.message) if isinstance(p, FieldError) else p for p in parsed
    ]


@settings(max_examples=400, deadline=None)
@given(st.lists(_ENTRY, min_size=1, max_size=5))
def test_the_fast_parse_decides_as_the_strict_one(entries: list[list[tuple[str, object]]]) -> None:
    raw = _text(entries)
    fast = _parse_renewals_fast(raw)
    strict: object
    try:
        strict = _shape(_parse_renewals_strict(raw))
    except FieldError as exc:
        strict = exc
    if fast is not None:
        assert _shape(fast) == strict
        assert all(isinstance(p, RenewalEntry) for p in fast)
    else:
        # Left to the strict parser: it finds something wrong, or the body has a key
        # the fast path cannot count (an escaped one).
        refused = isinstance(strict, FieldError) or any(
            isinstance(p, tuple) and p[0] == "FieldError" for p in strict
        )
        assert refused or b"\\u005f" in raw


def test_the_fast_parse_takes_a_plain_batch() -> None:
    raw = _raw({"leases": [{"lease_id": LEASE, "fencing_token": 2, "checkpoint_age": 3}]})
    assert _parse_renewals_fast(raw) == [RenewalEntry(LEASE, 2, [], 3.0)]
    assert _parse_renewals_fast(raw.replace(b"fencing_token", b"fencing\\u005ftoken")) is None
