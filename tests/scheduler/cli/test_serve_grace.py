"""``grafos-scheduler serve --max-grace`` as a process: the bound it sets, and a stop
that does not wait for the watches it is holding open."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from support.cli import run_cli

ADMIN = "admin-token-for-serve-grace-1"
WORKER = "alice-token-for-serve-grace-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'admin = "{ADMIN}"\n[workers]\nalice = "{WORKER}"\n')
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "grafos_scheduler",
            "serve",
            "--tokens",
            str(tokens),
            "--db",
            str(tmp_path / "s.db"),
            "--port",
            str(port),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    give_up = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < give_up, "serve did not start"
        time.sleep(0.05)


def test_max_grace_bounds_an_acquire_and_a_stop_does_not_wait_for_watches(
    tmp_path: Path,
) -> None:
    process, base = _serve(tmp_path, "--max-defer", "20", "--max-grace", "7")
    try:
        h = {"Authorization": f"Bearer {WORKER}"}
        too_long = {"job": "j", "slots": 1, "ttl": 30, "grace": 7.5}
        refused = httpx.post(f"{base}/v1/leases", json=too_long, headers=h)
        assert refused.status_code == 400
        assert refused.json()["field"] == "grace"
        assert "max_grace is 7 s" in refused.json()["message"]
        assert "max_defer is 20 s" in refused.json()["message"]
        ok = httpx.post(f"{base}/v1/leases", json={**too_long, "grace": 7}, headers=h)
        assert ok.status_code == 201
        assert ok.json()["lease"]["grace"] == 7.0
        # A watch that would wait a minute, then SIGTERM: serve stops within seconds.
        watching = threading.Thread(
            target=lambda: httpx.get(
                f"{base}/v1/watch", params={"timeout": 60}, headers=h, timeout=90
            ),
            daemon=True,
        )
        watching.start()
        time.sleep(0.5)
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        assert time.monotonic() - stopped_at < 15
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_bad_max_grace_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("serve", "--tokens", str(tmp_path / "t.toml"), "--max-grace", "-1")
    assert result.returncode == 2
    assert "max-grace" in result.stderr
