"""The configuration of ``serve``, and ``grafos-scheduler config show``.

Each setting comes from the first of: its flag, its ``GRAFOS_*`` environment variable,
the TOML file named by ``--config`` (or ``GRAFOS_CONFIG``), its default. Paths in the
file are relative to the file's own directory. Every value, wherever it came from, goes
through the same check as the flag, and a bad one is one line naming its source.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from grafos_scheduler import TokenConfig

from ._arguments import UsageError, port, positive_int, seconds
from ._connection import load_tokens
from ._database import DEFAULT_DB
from ._output import print_table

__all__ = [
    "DEFAULT_PORT",
    "SETTINGS",
    "ServeConfig",
    "Setting",
    "add_config_commands",
    "add_serve_settings",
    "resolve",
    "run_config",
]

DEFAULT_PORT = 8470
LOG_LEVELS = ("debug", "info", "warning", "error")


def _log_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.lower()


def _text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value")
    return text


@attrs.frozen
class Setting:
    """One setting of ``serve``: its key in the file, its flag, its variable, its check."""

    key: str
    flag: str
    env: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    is_path: bool = False
    kind: type = str  # what the TOML file must hold

    @property
    def dest(self) -> str:
        return self.key


SETTINGS = (
    Setting("db", "--db", "GRAFOS_DB", _text, DEFAULT_DB, "SQLite file", is_path=True),
    Setting("host", "--host", "GRAFOS_HOST", _text, "127.0.0.1", "address to bind (local only)"),
    Setting("port", "--port", "GRAFOS_PORT", port, DEFAULT_PORT, "TCP port", kind=int),
    Setting(
        "tokens",
        "--tokens",
        "GRAFOS_TOKENS",
        _text,
        None,
        'TOML token file: admin = "..." and a [workers] table of name = "token"',
        is_path=True,
    ),
    Setting("capacity", "--capacity", "GRAFOS_CAPACITY", positive_int, 4, "slots", kind=int),
    Setting(
        "max_defer",
        "--max-defer",
        "GRAFOS_MAX_DEFER",
        seconds,
        30.0,
        "longest a flush may defer a preemption, seconds",
        kind=float,
    ),
    Setting(
        "max_grace",
        "--max-grace",
        "GRAFOS_MAX_GRACE",
        seconds,
        None,
        "longest grace window an acquire may ask for, seconds (default: max_defer)",
        kind=float,
    ),
    Setting("log_level", "--log-level", "GRAFOS_LOG_LEVEL", _log_level, "info", "JSON log level"),
)
_BY_KEY = {s.key: s for s in SETTINGS}


@attrs.frozen
class ServeConfig:
    """The effective settings of ``serve``, and where each one came from."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def add_serve_settings(parser: argparse.ArgumentParser) -> None:
    """The flags of every setting (all default to None: unset, so lower sources apply)."""
    parser.add_argument(
        "--config", metavar="FILE", help="TOML file of settings (else GRAFOS_CONFIG)"
    )
    for setting in SETTINGS:
        default = "" if setting.default is None else f" (default: {setting.default})"
        parser.add_argument(
            setting.flag,
            dest=setting.dest,
            type=setting.parse,
            default=None,
            choices=LOG_LEVELS if setting.key == "log_level" else None,
            help=f"{setting.help}; {setting.env}{default}",
        )


def _read_file(path: str) -> dict[str, Any]:
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the config file {path!r}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {path!r} is not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - set(_BY_KEY))
    if unknown:
        known = ", ".join(_BY_KEY)
        raise UsageError(
            f"config file {path!r} has unknown keys: {', '.join(unknown)} (known: {known})"
        )
    values: dict[str, Any] = {}
    base = Path(path).parent
    for key, value in raw.items():
        setting = _BY_KEY[key]
        ok = isinstance(value, setting.kind) and not isinstance(value, bool)
        if setting.kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise UsageError(
                f"config file {path!r}: {key} = {value!r} is not a {setting.kind.__name__}"
            )
        try:
            parsed = setting.parse(str(value))
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"config file {path!r}: {key}: {exc}") from None
        if setting.is_path and not Path(parsed).is_absolute():
            parsed = str(base / parsed)
        values[key] = parsed
    return values


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServeConfig:
    """Flags, then the environment, then the file, then the defaults."""
    environ = os.environ if environ is None else environ
    config_path = args.config or environ.get("GRAFOS_CONFIG") or None
    from_file = {} if config_path is None else _read_file(config_path)
    file_label = f"file {config_path}"
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        flagged = getattr(args, setting.dest, None)
        if flagged is not None:
            values[setting.key], sources[setting.key] = flagged, f"flag {setting.flag}"
        elif environ.get(setting.env):
            try:
                values[setting.key] = setting.parse(environ[setting.env])
            except argparse.ArgumentTypeError as exc:
                raise UsageError(f"environment {setting.env}: {exc}") from None
            sources[setting.key] = f"environment {setting.env}"
        elif setting.key in from_file:
            values[setting.key], sources[setting.key] = from_file[setting.key], file_label
        else:
            values[setting.key], sources[setting.key] = setting.default, "default"
    return ServeConfig(values, sources)


def add_config_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    config = commands.add_parser(
        "config", help="configuration commands", description="Configuration commands."
    )
    sub = config.add_subparsers(dest="config_command", metavar="COMMAND", parser_class=parser_class)
    sub.required = True
    show = sub.add_parser(
        "show",
        help="print the effective configuration of serve and where each value came from",
        description=(
            "Print the settings `serve` would run with, given the same flags, environment "
            "and --config file, and where each value came from (flag, environment, file, "
            "default). Tokens are masked. Exits 2 if a value or the token file is bad."
        ),
    )
    add_serve_settings(show)


def _mask(token: str) -> str:
    return f"******** ({len(token)} characters)"


def run_config(args: argparse.Namespace) -> int:
    config = resolve(args)
    rows = [
        {"setting": key, "value": config.values[key], "source": config.sources[key]}
        for key in _BY_KEY
    ]
    url = os.environ.get("GRAFOS_URL")
    rows.append(
        {"setting": "url", "value": url, "source": "environment GRAFOS_URL" if url else "unset"}
    )
    token = os.environ.get("GRAFOS_TOKEN")
    rows.append(
        {
            "setting": "token",
            "value": _mask(token) if token else None,
            "source": "environment GRAFOS_TOKEN" if token else "unset",
        }
    )
    print_table(rows, ("setting", "value", "source"), "no settings")
    if config.tokens is None:
        raise UsageError("no token file: pass --tokens, set GRAFOS_TOKENS or tokens in --config")
    tokens: TokenConfig = load_tokens(config.tokens)
    print(f"\ntoken file {config.tokens}:")
    print(f"  admin  {_mask(tokens.admin_token)}")
    for name in tokens.workers:
        print(f"  workers.{name}  {_mask(tokens.worker_tokens[name])}")
    return 0
