"""The batch renewal body: the shape strictly, each entry on its own."""

from __future__ import annotations

import json

import pytest

from grafos_scheduler._wire._models import FieldError, RenewalEntry, parse_renewals

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
