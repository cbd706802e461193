"""Lease and ticket ids: unsigned 128-bit integers, 32 lowercase hex digits outside.

The one definition of the id rule: the domain checks ids with :func:`check_id`, and
the store, the audit chain, the errors and the wire all turn them into text with
:func:`id_hex` and back with :func:`id_from_hex`.
"""

from __future__ import annotations

import re
import secrets

from .._domain._errors import InvalidRequest

ID_BITS = 128
ID_LIMIT = 2**ID_BITS
#: The text form, as published in the OpenAPI schema (ECMA 262: ``$`` is the end).
ID_PATTERN = "^[0-9a-f]{32}$"
_ID_TEXT = re.compile(r"[0-9a-f]{32}")


def is_id(value: object) -> bool:
    """True for an unsigned 128-bit integer (and not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < ID_LIMIT


def check_id(value: object, what: str = "lease id") -> int:
    """Return ``value`` if it is an unsigned 128-bit integer, else raise InvalidRequest."""
    if not is_id(value):
        raise InvalidRequest(f"{what} {value!r} is not an unsigned 128-bit integer")
    assert isinstance(value, int)
    return value


def new_id() -> int:
    """A fresh random 128-bit id, from the operating system's CSPRNG.

    Not checked against the ids already used: two of n ids collide with a chance
    below n**2 / 2**129 (under 1e-14 for a trillion ids), far below a disk's error
    rate, and a store's keys refuse a lease id or a pending ticket id used twice.
    """
    return secrets.randbits(ID_BITS)


def id_hex(value: int) -> str:
    """The 32-character lowercase hex form that ids take in JSON and in the store."""
    return f"{value:032x}"


def id_from_hex(text: object, what: str = "id") -> int:
    """Parse the 32-character lowercase hex form back into an id; InvalidRequest if not."""
    if not isinstance(text, str) or not _ID_TEXT.fullmatch(text):
        raise InvalidRequest(f"{what} {text!r} is not a 32-character lowercase hex id")
    return int(text, 16)
