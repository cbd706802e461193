"""What the demo shows while it runs: a live table of jobs on a terminal, event lines on
a pipe, and at the end the whole timeline.

The live view is a rich ``Live`` display: rich sizes it to the terminal (80 columns is
enough), redraws it in place and crops it to the screen, so redraws never stack. Only
its last few events fit in it; every event is kept and the final report lists each
grant, preemption and resume. On a pipe (or with ``--no-progress``) each event is one
plain line as it happens, with no escape codes.
"""

from __future__ import annotations

import time
from types import TracebackType

import attrs
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

__all__ = ["Display", "Event", "JobView", "make_console"]

LIVE_EVENTS = 6  # the newest events shown under the bars; the report has them all


@attrs.define
class JobView:
    """What the display knows of one job."""

    job: str
    role: str
    total: int
    position: int = 0
    status: str = "starting"
    leases: int = 0
    tokens: list[int] = attrs.field(factory=list)
    checkpoints: int = 0
    stops: list[str] = attrs.field(factory=list)
    done: bool = False
    error: str | None = None


@attrs.frozen
class Event:
    """One line of the story: when (seconds into the run), what, and whether the final
    timeline keeps it (grants, preemptions, resumes, submissions, ends)."""

    at: float
    text: str
    milestone: bool

    def line(self) -> str:
        return f"{self.at:6.2f}s  {self.text}"


def make_console(out: object, *, width: int | None = None) -> Console:
    """A console on ``out`` that prints text as given (no markup, no highlighting)."""
    return Console(
        file=out,  # type: ignore[arg-type]
        width=width,
        markup=False,
        highlight=False,
        emoji=False,
    )


class Display:
    """The demo's screen: see the module docstring. Use it as a context manager."""

    def __init__(self, console: Console, jobs: list[JobView], live: bool) -> None:
        self.console = console
        self.jobs = jobs
        self.live = live
        self.events: list[Event] = []
        self.started = time.monotonic()
        self.started_wall = time.time()  # the same instant, to place audit records
        self._live: Live | None = None
        self._last = 0.0

    def __enter__(self) -> Display:
        if self.live:
            self._live = Live(
                self.render(),
                console=self.console,
                auto_refresh=False,
                transient=False,
                vertical_overflow="crop",
            )
            self._live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.update(self.render(), refresh=True)
            self._live.stop()
            self._live = None
            self.print_timeline()

    def event(self, text: str, *, milestone: bool = False) -> None:
        event = Event(time.monotonic() - self.started, text, milestone)
        self.events.append(event)
        if self._live is not None:
            self.draw(force=True)
        else:
            self.console.print(event.line(), soft_wrap=True)

    def draw(self, force: bool = False) -> None:
        if self._live is None:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        self._live.update(self.render(), refresh=True)

    def render(self) -> RenderableType:
        """The live view: one row per job, then the newest events, each one line."""
        width = self.console.width
        bar_width = max(8, min(30, width - 62))
        table = Table(box=None, show_header=True, padding=(0, 1), pad_edge=False)
        table.add_column("job", no_wrap=True, max_width=12, overflow="ellipsis")
        table.add_column("role", no_wrap=True, max_width=9, overflow="ellipsis")
        table.add_column("progress", no_wrap=True, width=bar_width)
        table.add_column("records", no_wrap=True, justify="right")
        table.add_column("token", no_wrap=True, justify="right")
        table.add_column("status", no_wrap=True, overflow="ellipsis", ratio=1)
        for j in self.jobs:
            table.add_row(
                j.job,
                j.role,
                ProgressBar(total=max(j.total, 1), completed=j.position, width=bar_width),
                f"{j.position}/{j.total}",
                str(j.tokens[-1]) if j.tokens else "-",
                j.status,
            )
        lines = [
            Text(e.line(), no_wrap=True, overflow="ellipsis") for e in self.events[-LIVE_EVENTS:]
        ]
        return Group(table, Text(""), *lines)

    def print_timeline(self) -> None:
        """Every grant, preemption, resume and end, in order (the live view had room
        only for the newest)."""
        kept = [e for e in self.events if e.milestone]
        self.console.print("")
        self.console.print(f"timeline ({len(kept)} events):")
        for event in kept:
            self.console.print(f"  {event.line()}", soft_wrap=True)
