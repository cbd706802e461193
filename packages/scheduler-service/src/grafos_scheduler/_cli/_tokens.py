"""``grafos-scheduler tokens generate``: a new token file, readable by its owner only."""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from grafos_scheduler import TokenConfig, TokenConfigError

from ._arguments import UsageError

__all__ = ["add_tokens_commands", "run_tokens"]


def add_tokens_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    tokens = commands.add_parser(
        "tokens", help="token file commands", description="Token file commands."
    )
    sub = tokens.add_subparsers(dest="tokens_command", metavar="COMMAND", parser_class=parser_class)
    sub.required = True
    generate = sub.add_parser(
        "generate",
        help="write a new token file (mode 0600)",
        description=(
            "Write a token file with a fresh random admin token and one token per --worker, "
            "readable by its owner only (mode 0600). The tokens are never printed. An "
            "existing file is left alone unless --force is given."
        ),
    )
    generate.add_argument("path", metavar="FILE", help="the token file to write")
    generate.add_argument(
        "--worker",
        action="append",
        default=[],
        metavar="NAME",
        help="a worker principal to give a token (repeat for more)",
    )
    generate.add_argument("--force", action="store_true", help="replace an existing file")


def run_tokens(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.is_dir():
        raise UsageError(f"{args.path!r} is a directory, not a token file")
    if path.exists() and not args.force:
        raise UsageError(f"{args.path!r} exists; pass --force to replace it")
    try:
        tokens = TokenConfig.generate(args.worker)
    except TokenConfigError as exc:
        raise UsageError(str(exc)) from None
    directory = path.parent if str(path.parent) else Path(".")
    try:
        # Written whole beside the target, then put in place: a reader never sees half
        # a file, and without --force a file that appeared meanwhile is not replaced.
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tokens-", suffix=".toml")
        os.close(fd)
        try:
            tokens.dump(temporary)
            os.chmod(temporary, 0o600)
            if args.force:
                os.replace(temporary, path)
            else:
                os.link(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    except FileExistsError:
        raise UsageError(f"{args.path!r} exists; pass --force to replace it") from None
    except OSError as exc:
        raise UsageError(f"cannot write {args.path!r}: {exc.strerror or exc}") from None
    workers = ", ".join(tokens.workers) or "none"
    print(f"wrote {path} (mode 0600): an admin token and worker tokens for: {workers}")
    return 0
