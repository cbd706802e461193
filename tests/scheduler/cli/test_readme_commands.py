"""Every command the README shows, run as a user would, in a fresh directory.

The README's console blocks are parsed, not copied here, so a command that changes in
the README is the command that runs. Three kinds:

- the two set-up commands (``python3 -m pip install "nox[uv]" && python3 -m nox ...``)
  run this very suite, so they are checked to be there, word for word, and not run;
- the installation blocks (``uv build``, ``uv tool install``) run in a directory of
  their own, with HOME and uv's tool directories inside it;
- every other block runs, in order, as one bash script with ``set -euo pipefail``. A
  ``serve`` line is started in the background and stopped (SIGTERM, exit status 0)
  before the next ``serve`` or at the end; once it answers ``/healthz`` the test makes
  the leases, the ticket and the exported head that the admin commands name
  (``$LEASE_ID`` ...). The service's port 8470 becomes a free port (in the text and as
  GRAFOS_PORT), since other test runs share this machine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
SETUP = (
    'python3 -m pip install "nox[uv]" && python3 -m nox -s demo',
    'python3 -m pip install "nox[uv]" && python3 -m nox',
)
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)

# Run once each serve answers: the leases, ticket and head that the admin block uses.
HOOK = textwrap.dedent(
    """
    import os, re, secrets, tomllib
    from grafos_scheduler import SchedulerClient

    url = f"http://127.0.0.1:{os.environ['GRAFOS_PORT']}"
    tokens = tomllib.load(open("tokens.toml", "rb"))
    worker = SchedulerClient(url, tokens["workers"]["ingest-1"])
    admin = SchedulerClient(url, tokens["admin"])
    ids = {}
    run = secrets.token_hex(3)  # each serve gets jobs of its own (the store persists)
    for name in ("LEASE_ID", "OTHER_LEASE_ID", "STUCK_LEASE_ID"):
        got = worker.acquire(f"readme-{run}-{name.lower()}", slots=1, ttl=600)
        ids[name] = got.lease.lease_id
    metrics = admin.metrics()
    slots = {
        kind: int(float(value))
        for kind, value in re.findall(r'grafos_slots\\{kind="(\\w+)"\\} (\\S+)', metrics)
    }
    worker.acquire(f"readme-{run}-filler", slots=slots["capacity"] - slots["leased"], ttl=600)
    ids["TICKET_ID"] = worker.acquire(f"readme-{run}-waits", slots=1, ttl=600).ticket.ticket_id
    head = admin.audit_head()
    ids["EXPORTED_HEAD"] = f"{head.seq}:{head.hash}"
    for name, value in ids.items():
        print(f"export {name}={value}")
    """
)

PRELUDE = textwrap.dedent(
    """
    set -euo pipefail
    SERVE_PID=""
    __wait_healthy() {
        python3 - <<'PY'
    import os, time, httpx
    url = f"http://127.0.0.1:{os.environ['GRAFOS_PORT']}/healthz"
    for _ in range(300):
        try:
            if httpx.get(url).is_success:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    else:
        raise SystemExit(f"{url} never answered")
    PY
    }
    __stop_serve() {
        if [ -n "$SERVE_PID" ]; then
            kill -TERM "$SERVE_PID"
            status=0; wait "$SERVE_PID" || status=$?
            SERVE_PID=""
            # uvicorn shuts down gracefully, then re-raises SIGTERM: 143 = 128 + 15.
            if [ "$status" != 0 ] && [ "$status" != 143 ]; then
                echo "serve exited with $status" >&2; exit 1
            fi
        fi
    }
    """
)


def _blocks() -> list[tuple[str, list[str], str]]:
    """(language, command lines, text before the block) for each fenced block."""
    text = README.read_text(encoding="utf-8")
    found = []
    for match in _BLOCK.finditer(text):
        lines = [
            line
            for line in match[2].splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        found.append((match[1], lines, text[: match.start()]))
    return found


def _console_blocks() -> list[list[str]]:
    return [lines for lang, lines, _ in _blocks() if lang in ("console", "sh", "bash")]


def _is_install(lines: list[str]) -> bool:
    return any(line.startswith(("uv build", "uv tool install")) for line in lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAFOS_")}
    # The environment this test runs in is the one the README's commands install.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(home)
    env.update(extra)
    return env


def test_the_set_up_commands_are_there_word_for_word() -> None:
    first = _console_blocks()[0]
    assert list(SETUP) == first


def test_every_operations_command_runs(tmp_path: Path) -> None:
    blocks = [b for b in _console_blocks()[1:] if not _is_install(b)]
    commands = [line for block in blocks for line in block]
    assert any("grafos-scheduler serve" in c for c in commands)
    toml = [
        lines
        for lang, lines, before in _blocks()
        if lang == "toml" and before.rstrip().endswith("`grafos.toml`:")
    ]
    assert len(toml) == 1, "the README's grafos.toml example"
    (tmp_path / "grafos.toml").write_text("\n".join(toml[0]) + "\n")
    # A Python block introduced by "`name.py`:" is a module a command imports.
    text = README.read_text(encoding="utf-8")
    modules = {
        named[1]: block[2]
        for block in _BLOCK.finditer(text)
        if block[1] == "python"
        and (named := re.search(r"`(\w+\.py)`:\s*\Z", text[: block.start()]))
    }
    assert "squares.py" in modules, "the worker example's pipeline module"
    for name, source in modules.items():
        (tmp_path / name).write_text(source)
    (tmp_path / "hook.py").write_text(HOOK)
    port = _free_port()
    script = [PRELUDE, "trap __stop_serve EXIT"]
    for command in commands:
        command = command.replace("8470", str(port))
        script.append(f"echo {shlex.quote('::: ' + command)} >&2")
        if "grafos-scheduler serve" in command:
            script += [
                "__stop_serve",
                f"{command} 2>>serve.log &",
                "SERVE_PID=$!",
                "__wait_healthy",
                '__ids="$(python3 hook.py)"',
                'eval "$__ids"',
            ]
        else:
            script.append(command)
    script.append("__stop_serve")
    (tmp_path / "readme.sh").write_text("\n".join(script) + "\n")
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(tmp_path / "readme.sh")],
        cwd=tmp_path,
        env=_env(tmp_path / "home", GRAFOS_PORT=str(port)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = (tmp_path / "serve.log").read_text() if (tmp_path / "serve.log").exists() else ""
    assert result.returncode == 0, result.stdout + result.stderr + log
    ran = [line[4:] for line in result.stderr.splitlines() if line.startswith("::: ")]
    assert len(ran) == len(commands)  # every one ran, and the last one ended the script
    out = result.stdout
    assert "PASS: demo directory" in out
    assert "audit chain verifies" in out
    assert "and holds the exported head" in out
    assert "file grafos.toml" in out  # config show names each value's source
    assert "job 'squares' done at position 10000" in out  # both workers
    assert "[99980001, 333283335000]" in out  # the output, exactly once
    # The second serve's log line names where its capacity came from.
    assert ("capacity", "environment GRAFOS_CAPACITY") in _members(log)


def _members(log: str) -> set[tuple[str, object]]:
    """Every (key, scalar value) pair in the JSON log lines, at any depth."""
    found: set[tuple[str, object]] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, str | int | float | bool) or item is None:
                    found.add((key, item))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for line in log.splitlines():
        if line.startswith("{"):
            walk(json.loads(line))
    return found


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("uv") is None, reason="the install commands use uv")
def test_the_install_commands_run(tmp_path: Path) -> None:
    blocks = [b for b in _console_blocks() if _is_install(b)]
    assert len(blocks) == 2, "both ways to install: wheels into a venv, and uv tool"
    (tmp_path / "packages").symlink_to(ROOT / "packages")
    home = tmp_path / "home"
    home.mkdir()
    env = _env(
        home,
        UV_TOOL_DIR=str(tmp_path / "tools"),
        UV_TOOL_BIN_DIR=str(home / ".local" / "bin"),
    )
    # Nothing of this test's own environment: the installed command must be found.
    env["PATH"] = f"{home / '.local' / 'bin'}{os.pathsep}/usr/local/bin:/usr/bin:/bin"
    env["PATH"] += os.pathsep + str(Path(shutil.which("uv") or "uv").parent)
    for block in blocks:
        script = "set -euo pipefail\n" + "\n".join(block) + "\n"
        result = subprocess.run(
            [shutil.which("bash") or "/bin/bash", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "grafos-scheduler 0.1.0" in result.stdout
