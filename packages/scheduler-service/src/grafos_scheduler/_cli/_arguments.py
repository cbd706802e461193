"""What every command shares: the parser class, value types, exit statuses, UsageError."""

from __future__ import annotations

import argparse
import math
import re
from typing import NoReturn

__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "Parser",
    "Refused",
    "UsageError",
    "hex_id",
    "port",
    "positive_int",
    "seconds",
]

EXIT_FAILED = 1  # a check failed, or the service refused the operation
EXIT_USAGE = 2  # bad arguments or configuration

_ID = re.compile(r"^[0-9a-f]{32}$")


class UsageError(Exception):
    """Bad arguments or configuration: one line on stderr, exit status 2."""


class Refused(Exception):
    """The service refused the operation (403, 404, 409, 410): one line, exit status 1."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("grafos-scheduler").strip()
        line = f"grafos-scheduler: error: {where + ': ' if where else ''}{message}\n"
        if "required: COMMAND" in message:
            # No command given: say which there are, not only that one is missing.
            self.exit(EXIT_USAGE, self.format_usage() + self.command_list() + line)
        self.exit(EXIT_USAGE, line)

    def command_list(self) -> str:
        lines = ["commands:"]
        for action in self._subparsers._group_actions if self._subparsers else ():
            for choice in getattr(action, "_choices_actions", ()):
                lines.append(f"  {choice.dest:<10} {choice.help}")
        return "\n".join(lines) + "\n"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds >= 0")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not in 0..65535")
    return value


def hex_id(text: str) -> str:
    """A lease or ticket id: 32 lowercase hex digits (upper case is accepted and lowered)."""
    value = text.strip().lower()
    if not _ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a 32-character hex id")
    return value
