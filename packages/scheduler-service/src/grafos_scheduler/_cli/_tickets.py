"""``grafos-scheduler tickets``: cancel a pending acquire, as the admin."""

from __future__ import annotations

import argparse
from typing import Any

from ._arguments import hex_id
from ._connection import add_url_arguments, call, connect
from ._output import as_dict, print_json, print_record

__all__ = ["add_tickets_commands", "run_tickets"]


def add_tickets_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    tickets = commands.add_parser(
        "tickets", help="ticket commands", description="Ticket (pending acquire) commands."
    )
    sub = tickets.add_subparsers(
        dest="tickets_command", metavar="COMMAND", parser_class=parser_class
    )
    sub.required = True
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
    with connect(args) as client:
        ticket = call(client, lambda: client.cancel_ticket(args.ticket_id))
    data = as_dict(ticket)
    if args.json:
        print_json(data)
    else:
        print_record(data)
    return 0
