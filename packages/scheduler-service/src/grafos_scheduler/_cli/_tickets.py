"""``grafos-scheduler tickets``: list the waiting tickets with why they wait, cancel one;
as the admin."""

from __future__ import annotations

import argparse
from typing import Any

from ._arguments import hex_id
from ._connection import add_url_arguments, call, connect
from ._output import as_dict, print_json, print_record, print_table

__all__ = ["add_tickets_commands", "run_tickets"]

LIST_COLUMNS = ("ticket_id", "job", "holder", "priority", "slots", "position", "waiting", "why")


def add_tickets_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    tickets = commands.add_parser(
        "tickets", help="ticket commands", description="Ticket (pending acquire) commands."
    )
    sub = tickets.add_subparsers(
        dest="tickets_command", metavar="COMMAND", parser_class=parser_class
    )
    sub.required = True
    listing = sub.add_parser(
        "list",
        help="list the waiting tickets and why each waits",
        description=(
            "List the waiting tickets in the order they will be granted, each with why it "
            "waits: its shortfall, the eligible and deferred victims (with deadlines), or "
            "the head of the queue it is blocked behind."
        ),
    )
    add_url_arguments(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per ticket")
    cancel = sub.add_parser(
        "cancel",
        help="withdraw a pending acquire",
        description=(
            "Withdraw a pending acquire (audited). Refused (exit 1) if the ticket became "
            "a lease already: release that lease instead."
        ),
    )
    cancel.add_argument("ticket_id", type=hex_id, metavar="TICKET_ID", help="32 hex digits")
    add_url_arguments(cancel)
    cancel.add_argument("--json", action="store_true", help="the answer as one JSON object")


def run_tickets(args: argparse.Namespace) -> int:
    if args.tickets_command == "list":
        return _list(args)
    with connect(args) as client:
        ticket = call(client, lambda: client.cancel_ticket(args.ticket_id))
    data = as_dict(ticket)
    if args.json:
        print_json(data)
    else:
        print_record(data)
    return 0


def _list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        tickets = call(client, client.tickets)
    rows = [as_dict(t) for t in tickets]
    if args.json:
        for row in rows:
            print_json(row)
        return 0
    for row in rows:
        wait = row.get("wait") or {}
        row["position"] = wait.get("position")
        row["waiting"] = wait.get("reason")
    print_table(rows, LIST_COLUMNS, "no waiting tickets")
    return 0
