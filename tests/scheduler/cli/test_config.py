"""serve's configuration: flags, then GRAFOS_* variables, then --config, then defaults;
`config show` tells where each value came from and masks the tokens."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from grafos_scheduler import TokenConfig
from support.internals import UsageError, cli_parser
from support.internals import resolve_serve_config as resolve

from .conftest import ADMIN_TOKEN, one_line_error, run_cli


def _args(*argv: str) -> argparse.Namespace:
    return cli_parser().parse_args(["config", "show", *argv])


def test_precedence_flags_environment_file_defaults(tmp_path: Path) -> None:
    config = tmp_path / "grafos.toml"
    config.write_text('db = "from-file.db"\nport = 9001\ncapacity = 6\nmax_defer = 12\n')
    env = {"GRAFOS_PORT": "9002", "GRAFOS_CAPACITY": "7"}
    resolved = resolve(_args("--config", str(config), "--capacity", "8"), env)
    assert resolved.capacity == 8
    assert resolved.sources["capacity"] == "flag --capacity"
    assert resolved.port == 9002
    assert resolved.sources["port"] == "environment GRAFOS_PORT"
    assert resolved.max_defer == 12.0
    assert resolved.sources["max_defer"] == f"file {config}"
    # Paths in the file are relative to the file.
    assert resolved.db == str(tmp_path / "from-file.db")
    assert resolved.host == "127.0.0.1"
    assert resolved.sources["host"] == "default"
    assert resolved.log_level == "info"
    assert resolved.tokens is None
    from_env = resolve(_args(), {"GRAFOS_CONFIG": str(config)})
    assert from_env.port == 9001


def test_max_grace_comes_from_its_flag_variable_or_file_else_none(tmp_path: Path) -> None:
    config = tmp_path / "grafos.toml"
    config.write_text("max_grace = 4\n")
    from_file = resolve(_args("--config", str(config)), {})
    assert (from_file.max_grace, from_file.sources["max_grace"]) == (4.0, f"file {config}")
    from_env = resolve(_args("--config", str(config)), {"GRAFOS_MAX_GRACE": "2.5"})
    assert from_env.max_grace == 2.5
    flagged = resolve(_args("--max-grace", "1"), {"GRAFOS_MAX_GRACE": "2.5"})
    assert flagged.max_grace == 1.0
    # Unset: the scheduler takes max_defer.
    assert resolve(_args(), {}).max_grace is None
    with pytest.raises(UsageError, match="GRAFOS_MAX_GRACE"):
        resolve(_args(), {"GRAFOS_MAX_GRACE": "-1"})


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        ('port = "80"\n', {}, "port = '80' is not a int"),
        ("capacity = 0\n", {}, "capacity: '0' must be at least 1"),
        ("frobnicate = 1\n", {}, "unknown keys: frobnicate"),
        ("port = [\n", {}, "not valid TOML"),
        ("", {"GRAFOS_MAX_DEFER": "soon"}, "environment GRAFOS_MAX_DEFER"),
        ("", {"GRAFOS_LOG_LEVEL": "loud"}, "GRAFOS_LOG_LEVEL"),
    ],
)
def test_a_bad_value_names_its_source(
    tmp_path: Path, text: str, env: dict[str, str], needle: str
) -> None:
    config = tmp_path / "grafos.toml"
    config.write_text(text)
    with pytest.raises(UsageError, match=needle.replace("[", r"\[")):
        resolve(_args("--config", str(config)), env)


def test_config_show_prints_sources_and_masks_tokens(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    TokenConfig(ADMIN_TOKEN, {"ingest-1": "ingest-token-0123456789"}).dump(tokens)
    config = tmp_path / "grafos.toml"
    config.write_text(f'tokens = "{tokens.name}"\ncapacity = 3\n')
    result = run_cli(
        "config",
        "show",
        "--config",
        str(config),
        "--port",
        "9100",
        env={"GRAFOS_CAPACITY": "5", "GRAFOS_TOKEN": "client-admin-token-0123"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "9100" in rows["port"]
    assert "flag --port" in rows["port"]
    assert "5" in rows["capacity"]
    assert "environment GRAFOS_CAPACITY" in rows["capacity"]
    assert str(tokens) in rows["tokens"]
    assert f"file {config}" in rows["tokens"]
    assert "default" in rows["host"]
    for secret in (ADMIN_TOKEN, "ingest-token-0123456789", "client-admin-token-0123"):
        assert secret not in out + result.stderr
    assert "workers.ingest-1  ********" in out


def test_serve_without_any_token_file_is_status_2() -> None:
    one_line_error(run_cli("serve"), 2, "--tokens, GRAFOS_TOKENS")
    one_line_error(run_cli("config", "show"), 2, "no token file")
