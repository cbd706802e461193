"""``grafos-scheduler leases``: list, show, release, preempt, fence, hold, unhold.

``list`` reads a database file or a running service; the others act on a running
service as the admin (``--url``/``GRAFOS_URL`` and ``--tokens``/``GRAFOS_TOKEN``).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from grafos_scheduler import LeaseState

from ._arguments import hex_id, seconds
from ._connection import add_url_arguments, call, connect
from ._database import add_source_arguments, iso, open_store, use_database
from ._output import as_dict, print_json, print_record, print_table

__all__ = ["add_leases_commands", "run_leases"]

LIST_COLUMNS = (
    "lease_id",
    "job",
    "holder",
    "priority",
    "slots",
    "fencing_token",
    "state",
    "expires_at",
)


def add_leases_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    leases = commands.add_parser("leases", help="lease commands", description="Lease commands.")
    sub = leases.add_subparsers(dest="leases_command", metavar="COMMAND", parser_class=parser_class)
    sub.required = True
    listing = sub.add_parser(
        "list",
        help="list leases",
        description=(
            "List leases from the SQLite file (--db) or a running service (--url with "
            "--tokens, or GRAFOS_URL and GRAFOS_TOKEN)."
        ),
    )
    add_source_arguments(listing)
    listing.add_argument(
        "--state", choices=[s.value for s in LeaseState], help="only leases in this state"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per lease")

    actions = {
        "show": "show one lease: state, token, reasons, pending preemption",
        "release": "release a lease (as the admin)",
        "preempt": "request the preemption of a lease (deferred while it is marked)",
        "fence": "revoke a lease at once",
        "hold": "set the operator hold on a lease (audited; it defers preemption, at most "
        "max_defer from the request)",
        "unhold": "clear the operator hold on a lease (a preemption it deferred goes now)",
    }
    for name, text in actions.items():
        action = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        action.add_argument("lease_id", type=hex_id, metavar="LEASE_ID", help="32 hex digits")
        if name == "preempt":
            action.add_argument(
                "--cause", default="operator request", help="why (default: %(default)s)"
            )
        if name == "hold":
            action.add_argument("--reason", required=True, help="why (recorded in the audit log)")
            action.add_argument(
                "--expires-in",
                type=seconds,
                metavar="SECONDS",
                help="the hold lapses after this long (default: until unhold)",
            )
        add_url_arguments(action)
        action.add_argument("--json", action="store_true", help="the answer as one JSON object")


def run_leases(args: argparse.Namespace) -> int:
    if args.leases_command == "list":
        return _list(args)
    with connect(args) as client:
        lid = args.lease_id
        answer: Any
        if args.leases_command == "show":
            answer = call(client, lambda: client.get(lid))
        elif args.leases_command == "release":
            answer = call(client, lambda: client.release(lid))
        elif args.leases_command == "preempt":
            answer = call(client, lambda: client.preempt(lid, args.cause))
        elif args.leases_command == "hold":
            answer = call(client, lambda: client.hold(lid, args.reason, args.expires_in))
        elif args.leases_command == "unhold":
            answer = call(client, lambda: client.unhold(lid))
        else:
            answer = call(client, lambda: client.fence(lid))
    data = as_dict(answer)
    if args.json:
        print_json(data)
    else:
        print_record(data)
    return 0


def _list(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    db = use_database(args)
    if db is not None:
        with open_store(db, must_exist=True, read_only=True) as store:
            wanted = None if args.state is None else LeaseState(args.state)
            now = time.time()
            # A lapsed ACTIVE row is EXPIRED (the scheduler commits that when it runs), so
            # filter on the state shown, not the one stored.
            stored_filter = wanted
            if wanted in (LeaseState.ACTIVE, LeaseState.EXPIRED):
                stored_filter = None
            for stored in store.list_leases(stored_filter):
                shown = stored.state_as_of(now)
                if wanted is not None and shown is not wanted:
                    continue
                lapsed = shown is not stored.state
                rows.append(
                    {
                        "lease_id": f"{stored.lease_id:032x}",
                        "job": stored.job,
                        "holder": stored.holder,
                        "priority": stored.priority,
                        "slots": stored.slots,
                        "fencing_token": stored.fencing_token,
                        "state": shown.value,
                        "granted_at": iso(stored.granted_wall),
                        "expires_at": iso(stored.expires_wall),
                        "pending_preemption": stored.preempt_cause,
                        "hold": stored.hold_reason if shown is LeaseState.ACTIVE else None,
                        "ended_at": iso(stored.expires_wall if lapsed else stored.ended_wall),
                        "end_cause": (
                            f"expired: not renewed within its ttl of {stored.ttl:g} s"
                            if lapsed
                            else stored.end_cause
                        ),
                    }
                )
    else:
        with connect(args) as client:
            leases = call(client, lambda: client.leases(args.state))
        for lease in leases:
            pending = lease.pending_preemption
            rows.append(
                {
                    "lease_id": lease.lease_id,
                    "job": lease.job,
                    "holder": lease.holder,
                    "priority": lease.priority,
                    "slots": lease.slots,
                    "fencing_token": lease.fencing_token,
                    "state": lease.state,
                    "granted_at": lease.granted_at,
                    "expires_at": lease.expires_at,
                    "pending_preemption": None if pending is None else pending.cause,
                    "hold": None if lease.hold is None else lease.hold.reason,
                    "ended_at": lease.ended_at,
                    "end_cause": lease.end_cause,
                }
            )
    if args.json:
        for row in rows:
            print_json(row)
    else:
        print_table(rows, LIST_COLUMNS, "no leases")
    return 0
