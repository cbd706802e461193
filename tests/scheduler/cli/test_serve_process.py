"""`serve` as a process: the JSON logs at debug level, and SIGHUP reloading the tokens."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import httpx

from grafos_scheduler import TokenConfig

from .conftest import ADMIN_TOKEN

NEW_ADMIN = "the-admin-token-after-reload"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Lines:
    """stderr of the server, collected by a thread."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def wait_for(self, event: str, timeout: float = 20.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                entry = json.loads(line)
                if entry.get("event") == event:
                    return dict(entry)
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} in {self.lines}")


def test_debug_logs_are_ours_json_without_colors_and_sighup_reloads_tokens(
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens.toml"
    TokenConfig(ADMIN_TOKEN, {}).dump(tokens)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAFOS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "grafos_scheduler", "serve", "--log-level", "debug"],
        env={
            **env,
            "GRAFOS_TOKENS": str(tokens),
            "GRAFOS_DB": str(tmp_path / "s.db"),
            "GRAFOS_PORT": str(port),
        },
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    lines = _Lines(process.stderr)
    try:
        serving = lines.wait_for("serving")
        assert serving["sources"] == {
            "db": "environment GRAFOS_DB",
            "host": "default",
            "port": "environment GRAFOS_PORT",
            "tokens": "environment GRAFOS_TOKENS",
            "capacity": "default",
            "max_defer": "default",
            "max_grace": "default",
            "log_level": "flag --log-level",
        }
        url = f"http://127.0.0.1:{port}"
        lines.wait_for("Application startup complete.")
        old = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        new = {"Authorization": f"Bearer {NEW_ADMIN}"}
        assert httpx.get(f"{url}/v1/leases", headers=old).status_code == 200

        TokenConfig(NEW_ADMIN, {}).dump(tokens)
        process.send_signal(signal.SIGHUP)
        lines.wait_for("tokens_reloaded")
        assert httpx.get(f"{url}/v1/leases", headers=new).status_code == 200
        assert httpx.get(f"{url}/v1/leases", headers=old).status_code == 401

        # A broken file on reload keeps the tokens in use.
        tokens.write_text('admin = "short"\n')
        process.send_signal(signal.SIGHUP)
        failed = lines.wait_for("tokens_reload_failed")
        assert "short" not in json.dumps(failed)  # the error never holds a token
        assert httpx.get(f"{url}/v1/leases", headers=new).status_code == 200
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=20)
    text = "".join(lines.lines)
    assert "\x1b" not in text
    assert "color_message" not in text
    entries = [json.loads(line) for line in lines.lines]
    assert not [e for e in entries if e["logger"].startswith(("faker", "hypothesis", "httpx"))]
    assert entries[0]["event"] == "serving"  # debug opens with our line, not faker's
