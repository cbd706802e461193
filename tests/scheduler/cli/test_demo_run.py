"""The default demo, as a user runs it on a pipe: it forces a preemption every time,
checks that it did, and prints every grant, preemption and resume without escapes."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from .conftest import run_cli


def test_the_default_demo_forces_a_preemption_and_reports_every_step(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    result = run_cli("demo", "--dir", str(directory), env={"COLUMNS": "80"}, timeout=240)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "\x1b" not in out  # a pipe gets no escape codes
    assert "PASS" in out
    assert "[FAIL]" not in out
    forced = re.search(r"\[ok\] a slow-disk flush .* (\d+) preemption\(s\) forced", out)
    assert forced is not None, out
    assert int(forced[1]) >= 1
    cooperative = re.search(r"\[ok\] within a .* (\d+) preemption\(s\) cooperative", out)
    assert cooperative is not None, out
    assert int(cooperative[1]) >= 1
    graceful = re.search(r"^ingest-4 +graceful .* (\d+\.\d+)s +\d+$", out, re.MULTILINE)
    assert graceful is not None, out
    assert float(graceful[1]) == 0.0  # the grace allowed it: nothing lost
    with sqlite3.connect(directory / "scheduler.db") as conn:
        kinds = [r[0] for r in conn.execute("SELECT kind FROM audit ORDER BY seq")]
        grants = conn.execute("SELECT COUNT(*) FROM audit WHERE kind = 'grant'").fetchone()[0]
    assert "preemption_forced" in kinds
    assert "preemption_cooperative" in kinds
    # Every grant is in the output: the first of each job and every resume.
    assert out.count("granted, fencing token") + out.count("resumed with a new lease") == grants
    # The forced preemption's story, from the audit log (wrapped lines joined).
    story = (
        r"token \d+: requested at [\d.]+s, "
        r"deferred \(checkpoint_in_progress\) at [\d.]+s, forced at"
    )
    assert re.search(story, " ".join(out.split())), out
    report = out[out.index("\njob ") : out.index("verification:")]
    assert all(len(line) <= 80 for line in report.splitlines()), report
