"""Request bodies are read once, decoded once (by the strict parser) and still published.

No route hands its body to Litestar (no ``data`` parameter), so the strict parser is the
only decoder. These tests hold it to everything the second decoding used to add, and
hold the OpenAPI schema to the models the parser enforces.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import attrs
import msgspec
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from grafos_scheduler._wire._parsing import (
    _parse_acquire_fast,
    _parse_body_strict,
    _parse_renew_fast,
)
from support.internals import (
    ROUTES,
    AcquireRequest,
    FieldError,
    HoldRequest,
    PreemptRequest,
    ReleaseRequest,
    RenewalsRequest,
    RenewRequest,
    body_model,
    parse_body,
    request_schema,
)
from support.servers import Client, Headers

BODIES = {
    ("POST", "/v1/leases"): AcquireRequest,
    ("POST", "/v1/leases/{lease_id}/renew"): RenewRequest,
    ("POST", "/v1/leases/{lease_id}/preempt"): PreemptRequest,
    ("POST", "/v1/leases/{lease_id}/holds"): HoldRequest,
    ("POST", "/v1/leases/{lease_id}/release"): ReleaseRequest,
}
# Parsed entry by entry (parse_renewals): a bad entry is that entry's error.
ENTRY_BY_ENTRY = {("POST", "/v1/renewals"): RenewalsRequest}


def test_no_handler_asks_litestar_for_its_body() -> None:
    declared = {}
    for handler in ROUTES:
        assert "data" not in inspect.signature(handler.fn).parameters, handler
        model = body_model(handler.opt)
        if model is not None:
            (method,) = handler.http_methods
            (path,) = handler.paths
            declared[(method, path.replace(":str}", "}"))] = model
    assert declared == BODIES | ENTRY_BY_ENTRY


def test_the_schema_publishes_every_body_as_the_parser_reads_it(
    client: Client, headers: Headers
) -> None:
    doc = client.get("/schema/openapi.json", headers=headers["admin"]).json()
    for (method, path), model in BODIES.items():
        body = doc["paths"][path][method.lower()]["requestBody"]
        ref = body["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{model.__name__}"
        component = doc["components"]["schemas"][model.__name__]
        assert component == request_schema(model).to_schema()
        assert component["additionalProperties"] is False
        # An empty body is an empty object: it is required when a field is.
        assert body["required"] is bool(component["required"])
    acquire = doc["components"]["schemas"]["AcquireRequest"]
    assert acquire["required"] == ["job", "slots", "ttl"]
    assert acquire["properties"]["slots"] == {"type": "integer", "minimum": 1, "maximum": 1000000}
    reasons = doc["components"]["schemas"]["RenewRequest"]["properties"]["reasons"]
    assert reasons["items"]["enum"] == ["checkpoint_in_progress", "operator_hold"]
    # A route without a body publishes none.
    assert "requestBody" not in doc["paths"]["/v1/leases/{lease_id}/fence"]["post"]


_ACQUIRE = {"job": "enc", "slots": 1, "ttl": 5}


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\xef\xbb\xbf" + json.dumps(_ACQUIRE).encode(), "byte order mark"),
        (json.dumps(_ACQUIRE).encode("utf-16"), "NUL byte"),
        (json.dumps(_ACQUIRE).encode("utf-16-le"), "NUL byte"),
        (json.dumps(_ACQUIRE).encode("utf-32-be"), "NUL byte"),
        (b'{"job": "enc\xe9", "slots": 1, "ttl": 5}', "can't decode byte 0xe9"),
    ],
)
def test_a_body_must_be_plain_utf8(client: Client, headers: Headers, raw: bytes, why: str) -> None:
    # json.loads alone would guess UTF-16, UTF-32 or a BOM and accept these.
    h = {**headers["alice"], "Content-Type": "application/json"}
    r = client.post("/v1/leases", content=raw, headers=h)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"
    assert r.json()["message"].startswith("the body is not valid JSON: ")
    assert why in r.json()["message"]
    assert client.get("/v1/leases", headers=headers["alice"]).json()["leases"] == []


# Each field near and across its limits, in the right JSON type and in wrong ones, so
# that many bodies pass the strict parser and the comparison means something.
_ints = st.one_of(
    st.integers(min_value=-5, max_value=5),
    st.sampled_from([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63]),
    st.sampled_from([1_000_000, 1_000_001]),
)
_wrong = st.one_of(st.none(), st.booleans(), st.sampled_from([1.0, "1", [1], {}]))
# (values most of them valid, values at or across the limits or of the wrong type)
_FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "job": (
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,130}", fullmatch=True),
        st.one_of(st.sampled_from(["", " ", "job\n", "j\u00e9", "-job"]), _wrong),
    ),
    "slots": (st.integers(min_value=1, max_value=4), st.one_of(_ints, _wrong)),
    "ttl": (
        st.floats(min_value=1e-300, max_value=86_400.0),
        st.one_of(
            st.floats(min_value=-1.0, max_value=90_000.0),
            st.sampled_from([0, 0.0, 5, 86_400, 86_400.001]),
            _wrong,
        ),
    ),
    "priority": (st.integers(min_value=-100, max_value=100), st.one_of(_ints, _wrong)),
    "fencing_token": (st.integers(min_value=1, max_value=2**63), st.one_of(_ints, _wrong)),
    "reasons": (
        st.lists(st.sampled_from(["checkpoint_in_progress", "operator_hold"]), max_size=3),
        st.one_of(st.lists(st.sampled_from(["other", 1, None]), min_size=1), _wrong),
    ),
    "cause": (
        st.text(min_size=1, max_size=40),
        st.one_of(st.sampled_from(["", "x" * 500, "x" * 501, "   ", "\t"]), _wrong),
    ),
    "reason": (
        st.text(min_size=1, max_size=40),
        st.one_of(st.sampled_from(["", "x" * 500, "x" * 501, "   ", "\t"]), _wrong),
    ),
    "expires_in": (
        st.one_of(st.none(), st.floats(min_value=1e-300, max_value=604_800.0)),
        st.one_of(st.sampled_from([0, 0.0, -1, 604_800, 604_800.5]), _wrong),
    ),
    "grace": (
        st.floats(min_value=0.0, max_value=86_400.0),
        st.one_of(st.sampled_from([-1.0, -0.0, 86_400.001]), _wrong),
    ),
    "checkpoint_age": (
        st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e9)),
        st.one_of(st.sampled_from([-1.0, 1e9 + 1]), _wrong),
    ),
    "work_lost_records": (
        st.one_of(st.none(), st.integers(min_value=0, max_value=2**63 - 1)),
        st.one_of(_ints, _wrong),
    ),
    "work_lost_seconds": (
        st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e9)),
        st.one_of(st.sampled_from([-1.0, 1e9 + 1]), _wrong),
    ),
}


@st.composite
def _bodies(draw: st.DrawFn) -> tuple[type[Any], dict[str, Any]]:
    model = draw(st.sampled_from(list(BODIES.values())))
    body: dict[str, Any] = {}
    for field in attrs.fields(model):
        if draw(st.integers(0, 9)) == 0:  # now and then a field left out
            continue
        likely, edge = _FIELDS[field.name]
        body[field.name] = draw(likely if draw(st.integers(0, 9)) < 8 else edge)
    if draw(st.integers(0, 19)) == 0:  # and a field the model does not have
        body["extra"] = draw(st.integers())
    return model, body


def _accepted(model: type[Any], body: dict[str, Any]) -> bool:
    try:
        parse_body(model, json.dumps(body).encode())
    except FieldError:
        return False
    return True


@pytest.mark.parametrize("model", list(BODIES.values()))
def test_the_bodies_reach_both_answers(model: type[Any]) -> None:
    # Otherwise the property below would hold by never getting past the parser.
    find(_bodies(), lambda mb: mb[0] is model and _accepted(*mb))
    find(_bodies(), lambda mb: mb[0] is model and not _accepted(*mb))


@given(_bodies())
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_the_strict_parser_accepts_nothing_the_model_decoder_refuses(
    drawn: tuple[type[Any], dict[str, Any]],
) -> None:
    """What Litestar's own decoding (msgspec, with the models' Meta) used to add: nothing."""
    model, body = drawn
    raw = json.dumps(body).encode()
    try:
        ours = parse_body(model, raw)
    except FieldError:
        return
    assert msgspec.json.decode(raw, type=model) == ours


# A renew's body is decoded in C (msgspec) when it is plainly valid; every other body
# is the strict parser's. Both must decide alike on every body.
_RENEW_KEYS = ["fencing_token", "reasons", "checkpoint_age", "fencing\\u005ftoken", "other"]
_RENEW_VALUES = st.one_of(
    st.integers(-1, 2**64),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.sampled_from([[], ["checkpoint_in_progress"], ["operator_hold"], ["nope"], "\ud800"]),
)


@st.composite
def _renew_body(draw: st.DrawFn) -> bytes:
    members: list[tuple[str, object]] = [("fencing_token", draw(st.integers(1, 2**63 - 1)))]
    if draw(st.booleans()):
        members.append(("reasons", draw(st.sampled_from([[], ["checkpoint_in_progress"]]))))
    if draw(st.booleans()):
        members.append(("checkpoint_age", draw(st.one_of(st.none(), st.floats(0, 1e6)))))
    for _ in range(draw(st.integers(0, 2))):
        members.insert(
            draw(st.integers(0, len(members))),
            (draw(st.sampled_from(_RENEW_KEYS)), draw(_RENEW_VALUES)),
        )
    draw(st.randoms()).shuffle(members)
    return ("{" + ",".join(f'"{k}":{json.dumps(v)}' for k, v in members) + "}").encode()


@settings(max_examples=500, deadline=None)
@given(_renew_body())
def test_a_renew_body_is_decided_alike_by_the_fast_and_the_strict_parser(raw: bytes) -> None:
    _decided_alike(RenewRequest, _parse_renew_fast, raw)


def _decided_alike(model: type[Any], fast_parse: Any, raw: bytes) -> None:
    """parse_body decides ``raw`` as the strict parser does; the fast parse takes it
    (as the same value) or leaves it (None), never decides it otherwise."""

    def outcome(parse: Any) -> object:
        try:
            return parse(raw)
        except FieldError as exc:
            return (exc.field, str(exc))

    strict = outcome(lambda raw: _parse_body_strict(model, raw))
    assert outcome(lambda raw: parse_body(model, raw)) == strict
    fast = fast_parse(raw)
    assert fast is None or fast == strict


# An acquire's body too: the commonest write, decoded in C when it is plainly valid.
_ACQUIRE_KEYS = ["job", "slots", "ttl", "priority", "grace", "j\\u006fb", "holder"]
_ACQUIRE_VALUES = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.sampled_from(["a", "job-1", "a b", "", "x" * 129, "\ud800", "é", "a\n"]),
)


@st.composite
def _acquire_body(draw: st.DrawFn) -> bytes:
    members: list[tuple[str, object]] = [
        ("job", draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,20}", fullmatch=True))),
        ("slots", draw(st.integers(1, 10))),
        ("ttl", draw(st.one_of(st.integers(1, 86400), st.floats(0.001, 86400)))),
    ]
    if draw(st.booleans()):
        members.append(("priority", draw(st.integers(-5, 5))))
    if draw(st.booleans()):
        members.append(("grace", draw(st.one_of(st.integers(0, 60), st.floats(0, 60)))))
    for _ in range(draw(st.integers(0, 2))):
        members.insert(
            draw(st.integers(0, len(members))),
            (draw(st.sampled_from(_ACQUIRE_KEYS)), draw(_ACQUIRE_VALUES)),
        )
    if draw(st.booleans()) and members:
        members.pop(draw(st.integers(0, len(members) - 1)))
    draw(st.randoms()).shuffle(members)
    return ("{" + ",".join(f'"{k}":{json.dumps(v)}' for k, v in members) + "}").encode()


@settings(max_examples=500, deadline=None)
@given(_acquire_body())
def test_an_acquire_body_is_decided_alike_by_the_fast_and_the_strict_parser(raw: bytes) -> None:
    _decided_alike(AcquireRequest, _parse_acquire_fast, raw)


def test_the_fast_acquire_parse_takes_a_plain_body_and_leaves_the_rest() -> None:
    plain = b'{"job":"etl-1","slots":2,"ttl":30,"priority":5,"grace":1.5}'
    assert _parse_acquire_fast(plain) == AcquireRequest("etl-1", 2, 30.0, 5, 1.5)
    for raw in (
        b'{"job":"a","slots":1,"ttl":30,"job":"b"}',  # a duplicate key
        b'{"j\\u006fb":"a","slots":1,"ttl":30}',  # an escape
        b'{"job":"a","slots":1,"ttl":30,"holder":"x"}',  # an unknown field
        b'{"job":"a","slots":true,"ttl":30}',  # a boolean for a number
    ):
        assert _parse_acquire_fast(raw) is None, raw
