"""``grafos-scheduler audit``: verify the chain (against an exported head), show records."""

from __future__ import annotations

import argparse
import re
from typing import Any

from grafos_scheduler import AuditLog

from ._arguments import EXIT_FAILED, positive_int
from ._connection import call, connect
from ._database import add_source_arguments, iso, open_store, use_database
from ._output import print_json, print_table

__all__ = ["add_audit_commands", "run_audit"]

_HEAD = re.compile(r"^(\d+):([0-9a-f]{64})$")
SHOW_COLUMNS = ("seq", "time", "kind", "lease_id", "job", "data")


def head_argument(text: str) -> tuple[int, str]:
    """``SEQ:HASH``, as ``audit verify`` prints it and as ``GET /v1/audit/head`` gives it."""
    match = _HEAD.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not SEQ:HASH (a sequence number, a colon, 64 hex digits)"
        )
    return int(match[1]), match[2]


def add_audit_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser(
        "audit", help="audit chain commands", description="Audit chain commands."
    )
    sub = audit.add_subparsers(dest="audit_command", metavar="COMMAND", parser_class=parser_class)
    sub.required = True
    verify = sub.add_parser(
        "verify",
        help="walk the audit chain and report the first bad record",
        description=(
            "Walk the audit chain and report the first bad record. Reads the SQLite file "
            "(--db) directly, or asks a running service (--url, with the admin token from "
            "--tokens or GRAFOS_TOKEN). With --head SEQ:HASH, a head exported earlier, it "
            "also checks that the chain still holds that record: a cut tail verifies by "
            "itself, but not against its old head. Exits 0 when the chain verifies and 1 "
            "when it does not."
        ),
    )
    add_source_arguments(verify)
    verify.add_argument(
        "--head",
        type=head_argument,
        metavar="SEQ:HASH",
        help="a head exported earlier, e.g. from a previous `audit verify`",
    )
    show = sub.add_parser(
        "show",
        help="print audit records",
        description="Print audit records, oldest first, from --db or a running service.",
    )
    add_source_arguments(show)
    show.add_argument(
        "--after", type=int, default=0, metavar="SEQ", help="start after this seq (default: 0)"
    )
    show.add_argument(
        "--limit", type=positive_int, default=100, help="at most this many (default: 100)"
    )
    show.add_argument("--json", action="store_true", help="one JSON object per record")


def run_audit(args: argparse.Namespace) -> int:
    if args.audit_command == "show":
        return _show(args)
    return _verify(args)


def _verify(args: argparse.Namespace) -> int:
    db = use_database(args)
    at_seq: dict[str, Any] | None = None  # the record at the exported head's seq
    if db is not None:
        with open_store(db, must_exist=True, read_only=True) as store:
            log = AuditLog(store)
            result = log.verify()
            ok, bad, reason, count = (
                result.ok,
                result.first_bad_seq,
                result.reason,
                result.records_checked,
            )
            head_seq, head_hash = result.head
            if args.head is not None:
                at_seq = _record_at(args.head[0], log.records)
    else:
        with connect(args) as client:
            answer = call(client, client.audit_verify)
            ok, bad, reason, count = answer.ok, answer.first_bad_seq, answer.reason, answer.records
            head_seq, head_hash = answer.head.seq, answer.head.hash
            if args.head is not None:

                def page(after_seq: int, limit: int) -> list[Any]:
                    return list(call(client, lambda: client.audit(after_seq, limit)).records)

                at_seq = _record_at(args.head[0], page)
    if not ok:
        print(f"audit chain does NOT verify: first bad seq {bad}: {reason}")
        return EXIT_FAILED
    if args.head is not None:
        seq, digest = args.head
        if at_seq is None:
            print(
                f"audit chain does NOT hold the exported head: it ends at seq {head_seq}, "
                f"before seq {seq}: its tail was cut"
            )
            return EXIT_FAILED
        if at_seq["hash"] != digest:
            print(
                f"audit chain does NOT hold the exported head: the record at seq {seq} has "
                f"hash {at_seq['hash']}, not {digest}: the chain was rewritten"
            )
            return EXIT_FAILED
    print(f"audit chain verifies: {count} records, head seq {head_seq} hash {head_hash}")
    if args.head is not None:
        print(f"and holds the exported head {args.head[0]}:{args.head[1]}")
    return 0


def _record_at(seq: int, page: Any) -> dict[str, Any] | None:
    """``seq`` and ``hash`` of the record at ``seq`` (seq 0: the chain's genesis link)."""
    if seq == 0:
        first = page(0, 1)
        return {"seq": 0, "hash": first[0].prev_hash} if first else None
    found = page(seq - 1, 1)
    if not found or found[0].seq != seq:
        return None
    return {"seq": seq, "hash": found[0].hash}


def _show(args: argparse.Namespace) -> int:
    db = use_database(args)
    rows: list[dict[str, Any]] = []
    if db is not None:
        with open_store(db, must_exist=True, read_only=True) as store:
            for record in AuditLog(store).records(after_seq=args.after, limit=args.limit):
                row = record.to_json()
                row["time"] = iso(record.time)
                rows.append(row)
    else:
        with connect(args) as client:
            page = call(client, lambda: client.audit(args.after, args.limit))
        for view in page.records:
            rows.append(
                {
                    "seq": view.seq,
                    "time": view.time,
                    "kind": view.kind,
                    "lease_id": view.lease_id,
                    "job": view.job,
                    "data": view.data,
                    "prev_hash": view.prev_hash,
                    "hash": view.hash,
                }
            )
    if args.json:
        for row in rows:
            print_json(row)
    else:
        print_table(rows, SHOW_COLUMNS, "no audit records")
    return 0
