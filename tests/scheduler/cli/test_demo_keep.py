"""grafos-scheduler demo --keep: the dashboard's URL and admin token are printed, and the
service stays up after the verification until the demo is interrupted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx


def test_keep_leaves_the_dashboard_up_until_interrupted(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "grafos_scheduler", "demo", "--size", "small", "--keep"]
    demo = subprocess.Popen(
        [*command, "--dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert demo.stdout is not None
    out = demo.stdout
    seen: list[str] = []
    # A thread reads the lines: select() on the pipe cannot see what the reader buffered.
    reader = threading.Thread(target=lambda: seen.extend(iter(out.readline, "")))
    reader.start()
    deadline = time.monotonic() + 150
    try:
        while not any("--keep: the service stays up" in line for line in list(seen)):
            assert time.monotonic() < deadline, "".join(seen)
            assert demo.poll() is None, "".join(seen)
            time.sleep(0.2)
        text = "".join(seen)
        assert "PASS: demo directory" in text, text
        found = re.search(r"dashboard (http://127\.0\.0\.1:\d+)/ui +admin token (\S+)", text)
        assert found is not None, text
        url, token = found.group(1), found.group(2)
        # The run is over, yet the page and the API answer, with the printed token.
        assert httpx.get(f"{url}/ui", follow_redirects=True).status_code == 200
        whoami = httpx.get(f"{url}/v1/whoami", headers={"Authorization": f"Bearer {token}"})
        assert whoami.status_code == 200, whoami.text
        assert whoami.json()["admin"] is True
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0
        # Interrupted, the server is gone.
        try:
            httpx.get(f"{url}/healthz", timeout=2.0)
        except httpx.TransportError:
            pass
        else:
            raise AssertionError("the demo's service still answers after Ctrl+C")
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        reader.join(timeout=10)
        demo.stdout.close()
