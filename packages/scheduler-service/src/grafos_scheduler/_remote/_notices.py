"""Platform notices: the machine is about to go away, so stop cleanly before it does.

Each source watches for one kind of notice and hands a :class:`PlatformNotice` to the
``WorkerAgent``, which turns it into "finish the record in hand, take a final
checkpoint, release, stop" before the notice's deadline:

- :class:`SignalNotices`: SIGTERM and SIGINT (Kubernetes sends SIGTERM and waits
  ``terminationGracePeriodSeconds``, 30 s by default; systemd and Slurm's ``--signal``
  do the same), with a configurable deadline.
- :class:`Ec2SpotNotices`: the EC2 spot interruption notice (``spot/instance-action``,
  two minutes ahead) and the rebalance recommendation
  (``events/recommendations/rebalance``, which can come earlier), polled over IMDSv2:
  a session token from ``PUT /latest/api/token``, then GETs carrying it; 404 means no
  notice. AWS says to poll every 5 s.
- :class:`GcePreemptionNotice`: ``instance/preempted`` on the GCE metadata server,
  which answers ``TRUE`` or ``FALSE``; ``wait_for_change`` with the last ETag hangs
  until it changes, so the notice arrives at once (GCE gives about 30 s).

The base URLs are parameters, so the tests run each protocol against a local server.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol

import attrs
import httpx

__all__ = [
    "DEFAULT_EC2_METADATA_URL",
    "DEFAULT_GCE_METADATA_URL",
    "Ec2SpotNotices",
    "GcePreemptionNotice",
    "NoticeKind",
    "NoticeSource",
    "PlatformNotice",
    "SignalNotices",
]

logger = logging.getLogger("grafos_scheduler.agent")

DEFAULT_EC2_METADATA_URL = "http://169.254.169.254"
DEFAULT_GCE_METADATA_URL = "http://metadata.google.internal"
EC2_TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name, not a secret
EC2_TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"  # noqa: S105 - a header name


class NoticeKind(enum.Enum):
    SIGNAL = "signal"  # SIGTERM or SIGINT
    EC2_SPOT_INTERRUPTION = "ec2_spot_interruption"
    EC2_REBALANCE_RECOMMENDATION = "ec2_rebalance_recommendation"
    GCE_PREEMPTION = "gce_preemption"


@attrs.frozen
class PlatformNotice:
    """The platform said this machine goes away; stop before ``deadline`` (monotonic)."""

    kind: NoticeKind
    detail: str  # for people: "SIGTERM", "terminate at 2026-12-01T10:00:00Z"
    received_at: float  # time.monotonic()
    deadline: float | None  # time.monotonic(); None when the platform gives none

    @property
    def deadline_in(self) -> float | None:
        """Seconds left before the deadline (0 once passed); None without a deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def describe(self) -> str:
        left = self.deadline_in
        due = "no deadline" if left is None else f"{left:.1f} s left"
        return f"{self.kind.value} ({self.detail}; {due})"


Notify = Callable[[PlatformNotice], None]


class NoticeSource(Protocol):
    """Something that can tell a worker its machine is going away.

    ``start(notify)`` begins watching and returns at once; ``notify`` is called at most
    once, from a background thread, and must not block. ``stop()`` ends the watch and
    undoes what ``start`` changed (signal handlers); it is safe to call twice.
    """

    name: str

    def start(self, notify: Notify) -> None: ...

    def stop(self) -> None: ...


class SignalNotices:
    """SIGTERM and SIGINT become a notice with ``deadline`` seconds to stop.

    The handler only records the signal and writes a byte to a pipe; a thread reads the
    pipe and calls ``notify``, so no lock is ever taken inside a signal handler. A
    second SIGINT raises ``KeyboardInterrupt`` as usual (the person at the keyboard
    wants out now); a repeated SIGTERM is ignored. ``start`` must run in the main
    thread, where Python delivers signals.
    """

    name = "sigterm"

    def __init__(
        self,
        signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
        *,
        deadline: float = 30.0,
    ) -> None:
        if not deadline > 0:
            raise ValueError(f"signal notice deadline {deadline!r} must be above 0 seconds")
        self.signals = tuple(signals)
        self.deadline = deadline
        self._previous: dict[signal.Signals, object] = {}
        self._received: list[int] = []
        self._pipe: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    def start(self, notify: Notify) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("SignalNotices.start must be called from the main thread")
        if self._pipe is not None:
            return
        read_fd, write_fd = os.pipe()
        self._pipe = (read_fd, write_fd)
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        self._thread = threading.Thread(
            target=self._dispatch, args=(notify, read_fd), name="signal-notices", daemon=True
        )
        self._thread.start()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._received.append(signum)
        if len(self._received) == 1 and self._pipe is not None:
            os.write(self._pipe[1], b"!")

    def _dispatch(self, notify: Notify, read_fd: int) -> None:
        try:
            if not os.read(read_fd, 1):
                return  # closed by stop()
        except OSError:
            return
        received = time.monotonic()
        name = signal.Signals(self._received[0]).name
        notify(PlatformNotice(NoticeKind.SIGNAL, name, received, received + self.deadline))

    def stop(self) -> None:
        if self._pipe is None:
            return
        if threading.current_thread() is threading.main_thread():
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous.clear()
        read_fd, write_fd = self._pipe
        self._pipe = None
        os.close(write_fd)  # the dispatcher's read returns b"" and it ends
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        os.close(read_fd)


def _parse_utc(text: str) -> float | None:
    """Wall-clock seconds of an ISO 8601 UTC time such as ``2026-12-01T10:00:00Z``."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _json_object(response: httpx.Response) -> dict[str, object]:
    """The answer's JSON object; {} for anything else (the notice still counts)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class _PollingSource:
    """A background thread that polls until it has delivered its notice or is stopped."""

    name = ""

    def __init__(self, base_url: str, *, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http: httpx.Client | None = None
        self._warned = False

    def start(self, notify: Notify) -> None:
        if self._thread is not None:
            return
        self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout)
        self._thread = threading.Thread(
            target=self._run, args=(notify,), name=f"{self.name}-notices", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.timeout + 1.0)
        if self._http is not None:
            self._http.close()
            self._http = None

    def _run(self, notify: Notify) -> None:
        http = self._http
        assert http is not None
        try:
            self._watch(http, notify)
        except Exception as exc:
            if not self._stop.is_set():
                logger.exception(
                    "notice watch failed",
                    extra={"event": "notice_watch_failed", "source": self.name, "error": repr(exc)},
                )

    def _watch(self, http: httpx.Client, notify: Notify) -> None:
        raise NotImplementedError

    def _unreachable(self, exc: Exception | str) -> None:
        """Log the first failure to reach the metadata server; keep trying after it."""
        if not self._warned:
            self._warned = True
            logger.warning(
                "metadata server unreachable; still trying",
                extra={
                    "event": "notice_metadata_unreachable",
                    "source": self.name,
                    "url": self.base_url,
                    "error": str(exc)[:200],
                },
            )


class Ec2SpotNotices(_PollingSource):
    """The EC2 spot interruption notice and rebalance recommendation, over IMDSv2.

    Every ``interval`` seconds it GETs ``/latest/meta-data/spot/instance-action`` and
    ``/latest/meta-data/events/recommendations/rebalance`` with the session token
    (a 401 means the token expired: it takes a new one). 404 means no notice. An
    interruption's deadline is its ``time``; a rebalance recommendation has none,
    unless ``rebalance_deadline`` gives one.
    """

    name = "ec2"

    def __init__(
        self,
        base_url: str = DEFAULT_EC2_METADATA_URL,
        *,
        interval: float = 5.0,
        token_ttl: int = 21600,
        timeout: float = 2.0,
        rebalance: bool = True,
        rebalance_deadline: float | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"EC2 notice poll interval {interval!r} must be above 0 seconds")
        if not 1 <= token_ttl <= 21600:
            raise ValueError(f"IMDSv2 token ttl {token_ttl!r} must be 1..21600 seconds")
        super().__init__(base_url, timeout=timeout)
        self.interval = interval
        self.token_ttl = token_ttl
        self.rebalance = rebalance
        self.rebalance_deadline = rebalance_deadline
        self._token: str | None = None
        self._token_expires = 0.0
        self.polls = 0  # completed poll rounds, for tests

    def _session_token(self, http: httpx.Client, *, renew: bool = False) -> str:
        if renew or self._token is None or time.monotonic() >= self._token_expires:
            response = http.put(
                "/latest/api/token", headers={EC2_TOKEN_TTL_HEADER: str(self.token_ttl)}
            )
            response.raise_for_status()
            self._token = response.text.strip()
            # Take a new one a little before the old one lapses.
            self._token_expires = time.monotonic() + self.token_ttl * 0.9
        return self._token

    def _get(self, http: httpx.Client, path: str) -> httpx.Response:
        token = self._session_token(http)
        response = http.get(path, headers={EC2_TOKEN_HEADER: token})
        if response.status_code == 401:  # the token lapsed or was revoked
            token = self._session_token(http, renew=True)
            response = http.get(path, headers={EC2_TOKEN_HEADER: token})
        return response

    def _watch(self, http: httpx.Client, notify: Notify) -> None:
        while not self._stop.is_set():
            try:
                notice = self._poll(http)
            except (httpx.HTTPError, ValueError) as exc:
                self._unreachable(exc)
                notice = None
            self.polls += 1
            if notice is not None:
                notify(notice)
                return
            self._stop.wait(self.interval)

    def _poll(self, http: httpx.Client) -> PlatformNotice | None:
        response = self._get(http, "/latest/meta-data/spot/instance-action")
        if response.status_code == 200:
            body = _json_object(response)
            action, when = str(body.get("action", "")), str(body.get("time", ""))
            received = time.monotonic()
            wall = _parse_utc(when)
            deadline = received + 120.0 if wall is None else received + wall - time.time()
            return PlatformNotice(
                NoticeKind.EC2_SPOT_INTERRUPTION,
                f"{action or 'interruption'} at {when or 'an unstated time'}",
                received,
                max(received, deadline),
            )
        if response.status_code != 404:
            self._unreachable(f"spot/instance-action answered {response.status_code}")
        if not self.rebalance:
            return None
        response = self._get(http, "/latest/meta-data/events/recommendations/rebalance")
        if response.status_code == 200:
            body = _json_object(response)
            received = time.monotonic()
            due = None if self.rebalance_deadline is None else received + self.rebalance_deadline
            return PlatformNotice(
                NoticeKind.EC2_REBALANCE_RECOMMENDATION,
                f"rebalance recommended at {body.get('noticeTime', 'an unstated time')}",
                received,
                due,
            )
        if response.status_code != 404:
            self._unreachable(f"events/recommendations/rebalance answered {response.status_code}")
        return None


class GcePreemptionNotice(_PollingSource):
    """The GCE preemption notice: ``/computeMetadata/v1/instance/preempted``.

    One plain read takes the value and its ETag; then ``wait_for_change=true`` with
    ``last_etag`` hangs (up to ``wait`` seconds per request) until the value changes.
    ``TRUE`` is the notice; GCE then gives about 30 s (``deadline``).
    """

    name = "gce"
    PATH = "/computeMetadata/v1/instance/preempted"

    def __init__(
        self,
        base_url: str = DEFAULT_GCE_METADATA_URL,
        *,
        deadline: float = 30.0,
        wait: float = 60.0,
        retry_interval: float = 1.0,
        timeout: float = 2.0,
    ) -> None:
        if not deadline > 0:
            raise ValueError(f"GCE notice deadline {deadline!r} must be above 0 seconds")
        if not wait >= 1:
            raise ValueError(f"GCE wait_for_change timeout {wait!r} must be at least 1 second")
        super().__init__(base_url, timeout=timeout)
        self.deadline = deadline
        self.wait = wait
        self.retry_interval = retry_interval
        self.waits = 0  # wait_for_change requests answered, for tests

    def _watch(self, http: httpx.Client, notify: Notify) -> None:
        etag: str | None = None
        waiting = False  # after the first plain read, every request waits for a change
        while not self._stop.is_set():
            params: dict[str, str] = {}
            timeout = self.timeout
            if waiting:
                params = {"wait_for_change": "true", "timeout_sec": str(int(self.wait))}
                if etag is not None:
                    params["last_etag"] = etag
                timeout = self.wait + self.timeout
            sent = time.monotonic()
            try:
                response = http.get(
                    self.PATH, params=params, headers={"Metadata-Flavor": "Google"}, timeout=timeout
                )
            except httpx.HTTPError as exc:
                self._unreachable(exc)
                self._stop.wait(self.retry_interval)
                continue
            if response.status_code != 200:
                self._unreachable(f"instance/preempted answered {response.status_code}")
                waiting, etag = False, None
                self._stop.wait(self.retry_interval)
                continue
            if waiting:
                self.waits += 1
            new_etag = response.headers.get("ETag")
            if response.text.strip().upper() == "TRUE":
                received = time.monotonic()
                notify(
                    PlatformNotice(
                        NoticeKind.GCE_PREEMPTION,
                        "instance/preempted is TRUE",
                        received,
                        received + self.deadline,
                    )
                )
                return
            if waiting and new_etag == etag and time.monotonic() - sent < 0.05:
                # The server did not wait (no ETag support?): do not spin.
                self._stop.wait(self.retry_interval)
            waiting, etag = True, new_etag
