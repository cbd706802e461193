"""The ``Checkpoint`` value and its self-verifying binary format."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring
from types import MappingProxyType

from ._errors import CorruptCheckpoint, InvalidCheckpoint
from ._observer import validate_lease_id


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One committed snapshot of a pipeline: every stage's state and the input position.

    ``sequence`` increases by one per committed checkpoint of a pipeline.
    ``fencing_token`` is the writer's token; a store refuses commits whose token is
    lower than the highest it has seen. ``created_at`` is wall-clock seconds.
    """

    pipeline: str
    sequence: int
    fencing_token: int
    lease_id: int | None
    position: int
    stage_states: Mapping[str, bytes]
    created_at: float

    def __post_init__(self) -> None:
        # Fields are typed, but a checkpoint is also built from decoded files and
        # from user code: check the values, not just the annotations.
        pipeline: object = self.pipeline
        if not isinstance(pipeline, str) or not pipeline:
            raise InvalidCheckpoint(f"pipeline name {pipeline!r} is not a non-empty string")
        for field in ("sequence", "fencing_token", "position"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidCheckpoint(f"{field} {value!r} is not a non-negative integer")
        if self.lease_id is not None:
            validate_lease_id(self.lease_id)
        created_at: object = self.created_at
        if (
            isinstance(created_at, bool)
            or not isinstance(created_at, int | float)
            or not math.isfinite(created_at)
        ):
            raise InvalidCheckpoint(f"created_at {created_at!r} is not a finite number")
        states: dict[str, bytes] = {}
        for name, state in self.stage_states.items():
            key: object = name
            if not isinstance(key, str) or not key:
                raise InvalidCheckpoint(f"stage name {name!r} is not a non-empty string")
            if not isinstance(state, bytes):
                raise InvalidCheckpoint(
                    f"state of stage {name!r} is {type(state).__name__}, not bytes"
                )
            states[name] = state
        # A private copy behind a read-only view: the checkpoint cannot change after
        # it was verified, whatever the caller does with its dict.
        object.__setattr__(self, "stage_states", MappingProxyType(states))


# Layout, version 1 (all integers big-endian):
#   0  magic  b"GRAFOSCP"            8 bytes
#   8  version                       u16
#  10  header length H               u32
#  14  SHA-256 of bytes 8..14 and 46..end   32 bytes
#  46  header: UTF-8 JSON, H bytes (fields, and [stage name, length] pairs in order)
#  46+H  the stage states, concatenated
MAGIC = b"GRAFOSCP"
VERSION = 1
_PREFIX = struct.Struct(">8sHI")
DIGEST_OFFSET = _PREFIX.size
BODY_OFFSET = DIGEST_OFFSET + hashlib.sha256().digest_size
_ZERO_DIGEST = bytes(BODY_OFFSET - DIGEST_OFFSET)


@dataclass(frozen=True, slots=True)
class EncodedCheckpoint:
    """A checkpoint laid out for writing, without copying the stage states.

    ``head`` holds the prefix (with a zeroed digest) and the JSON header; the stage
    states follow it unchanged. The digest covers ``hashed_prefix``, the header and
    the states, and is written at ``DIGEST_OFFSET``.
    """

    head: bytes
    states: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return len(self.head) + sum(len(s) for s in self.states)

    def digest(self) -> bytes:
        h = hashlib.sha256(self.head[8:DIGEST_OFFSET])
        h.update(memoryview(self.head)[BODY_OFFSET:])
        for state in self.states:
            h.update(state)
        return h.digest()

    def content(self) -> bytes:
        """The whole file content, digest included, in one buffer."""
        head = self.head
        return b"".join((head[:DIGEST_OFFSET], self.digest(), head[BODY_OFFSET:], *self.states))


def encode(checkpoint: Checkpoint) -> EncodedCheckpoint:
    # The header is compact JSON, exactly what ``json.dumps(header, separators=(",", ":"),
    # ensure_ascii=False)`` gives, built directly: this runs on every commit. Numbers
    # are validated ints (and a finite number for created_at) by ``Checkpoint``.
    states = checkpoint.stage_states
    stages = ",".join(
        [f"[{encode_basestring(name)},{len(state)}]" for name, state in states.items()]
    )
    # JSON numbers lose precision above 2**53: a lease id travels as hex.
    lease = "null" if checkpoint.lease_id is None else f'"{checkpoint.lease_id:032x}"'
    created_at = checkpoint.created_at
    # json.dumps writes a float as float.__repr__ does; anything else (an int) its way.
    created = float.__repr__(created_at) if type(created_at) is float else json.dumps(created_at)
    header_bytes = (
        f'{{"pipeline":{encode_basestring(checkpoint.pipeline)},'
        f'"sequence":{int.__repr__(checkpoint.sequence)},'
        f'"fencing_token":{int.__repr__(checkpoint.fencing_token)},'
        f'"lease_id":{lease},"position":{int.__repr__(checkpoint.position)},'
        f'"created_at":{created},"stages":[{stages}]}}'
    ).encode()
    head = _PREFIX.pack(MAGIC, VERSION, len(header_bytes)) + _ZERO_DIGEST + header_bytes
    return EncodedCheckpoint(head=head, states=tuple(states.values()))


def encode_bytes(checkpoint: Checkpoint) -> bytes:
    """The whole file content, digest included."""
    return encode(checkpoint).content()


def decode(data: bytes, *, origin: str = "checkpoint") -> Checkpoint:
    """Verify and decode file content; raise ``CorruptCheckpoint`` naming ``origin``."""
    if len(data) < BODY_OFFSET:
        raise CorruptCheckpoint(f"{origin}: {len(data)} bytes is shorter than the header")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise CorruptCheckpoint(f"{origin}: bad magic {magic!r}")
    if version != VERSION:
        raise CorruptCheckpoint(f"{origin}: unsupported format version {version}")
    view = memoryview(data)
    h = hashlib.sha256(view[8:DIGEST_OFFSET])
    h.update(view[BODY_OFFSET:])
    if h.digest() != data[DIGEST_OFFSET:BODY_OFFSET]:
        raise CorruptCheckpoint(f"{origin}: SHA-256 mismatch")
    body_start = BODY_OFFSET + header_len
    try:
        header = json.loads(view[BODY_OFFSET:body_start].tobytes())
        stages: dict[str, bytes] = {}
        offset = body_start
        for name, length in header["stages"]:
            stages[name] = data[offset : offset + length]
            offset += length
        if offset != len(data):
            raise CorruptCheckpoint(f"{origin}: {len(data) - offset} bytes past the last stage")
        lease_hex = header["lease_id"]
        return Checkpoint(
            pipeline=header["pipeline"],
            sequence=header["sequence"],
            fencing_token=header["fencing_token"],
            lease_id=None if lease_hex is None else int(lease_hex, 16),
            position=header["position"],
            stage_states=stages,
            created_at=header["created_at"],
        )
    except CorruptCheckpoint:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        # The digest matched, so this is a writer bug or a forged file, not bit rot.
        raise CorruptCheckpoint(f"{origin}: malformed header: {exc}") from exc
