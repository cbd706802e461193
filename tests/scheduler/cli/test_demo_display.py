"""The demo's display: 80 columns on a terminal without stacking, plain lines on a pipe,
and a final timeline with every grant, preemption and resume."""

from __future__ import annotations

import io
import re

from rich.console import Console

from support.internals import LIVE_EVENTS, Display, JobView

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _jobs() -> list[JobView]:
    roles = ["steady", "slow-disk", "fast", "steady", "urgent"]
    names = ["ingest-1", "ingest-2", "ingest-3", "ingest-4", "urgent"]
    return [
        JobView(n, r, 1500, position=700, tokens=[1, 2], status="waiting for a lease")
        for n, r in zip(names, roles, strict=True)
    ]


def _story(display: Display) -> list[str]:
    """Forty milestones (grants, preemptions, resumes) and as many progress redraws."""
    lines = []
    for i in range(10):
        for what in ("granted", "stopped at record 120: preempted", "resumed with a new lease"):
            text = f"ingest-{i % 4 + 1}: lease {i:08x}.. {what}, fencing token {i + 1}"
            display.event(text, milestone=True)
            lines.append(text)
        display.event(f"ingest-{i % 4 + 1}: lease {i:08x}.. stopped: lost (renewal refused)")
        for job in display.jobs:
            job.position = min(job.total, job.position + 50)
            display.draw(force=True)
    return lines


def test_live_view_fits_80_columns_and_is_bounded() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, height=24, force_terminal=True, color_system=None)
    display = Display(console, _jobs(), live=True)
    frame = console.render_lines(display.render(), console.options)
    assert all(sum(seg.cell_length for seg in line) <= 80 for line in frame)
    with display:
        milestones = _story(display)
        # However many events came, the live view keeps its height: a redraw replaces
        # the frame in place and never adds to it.
        frame = console.render_lines(display.render(), console.options, pad=False)
        assert len(frame) == len(display.jobs) + 2 + LIVE_EVENTS
        for line in frame:
            assert sum(seg.cell_length for seg in line) <= 80
    text = ANSI.sub("", out.getvalue())
    report = text[text.index("timeline (") :]
    for milestone in milestones:
        assert milestone in report  # not a sliding window: every one is in the report


def test_on_a_pipe_every_event_is_one_plain_line() -> None:
    out = io.StringIO()  # not a terminal
    console = Console(file=out, width=80)
    display = Display(console, _jobs(), live=False)
    with display:
        milestones = _story(display)
    text = out.getvalue()
    assert "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 40  # 30 milestones and 10 other events, one line each
    for milestone in milestones:
        assert any(line.endswith(milestone) for line in lines)
