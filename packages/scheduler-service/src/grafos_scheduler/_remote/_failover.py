"""FailoverTransport: an httpx transport that finds the leader among several replicas.

A standby answers every API call with 307 and the leader's URL (followed, with the
same method and body, and remembered), or with 503 ``not_leader`` when it knows no
leader (the next URL is tried). A replica that cannot be connected to is skipped for
the next. A request that may have reached a leader (a read error or timeout after it
was sent) is not resent: the caller decides, since an acquire may have been granted.
All of it happens within the request's own timeout, which a worker agent caps at the
time left on its lease.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import httpx

from .._domain._errors import SchedulerError

__all__ = ["FailoverTransport", "parse_base_urls"]

#: Consecutive redirects followed before the answer is handed back as it is.
MAX_REDIRECTS = 5
#: The pause before another round over every URL when none of them leads.
ROUND_PAUSE = 0.05


def parse_base_urls(urls: str | Sequence[str]) -> list[str]:
    """Base URLs from a list or a comma-separated string; SchedulerError if none."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    parsed: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise SchedulerError(f"base URL {item!r} is not a string")
        text = item.strip().rstrip("/")
        if not text:
            continue
        url = httpx.URL(text)
        if url.scheme not in ("http", "https") or not url.host:
            raise SchedulerError(f"base URL {item!r} is not an http:// or https:// URL")
        parsed.append(text)
    if not parsed:
        raise SchedulerError(f"no base URL in {urls!r}")
    return parsed


def _is_not_leader(response: httpx.Response) -> bool:
    try:
        return bool(response.json().get("error") == "not_leader")
    except (ValueError, AttributeError):
        return False


def _budget(request: httpx.Request, default: float) -> float:
    timeout = request.extensions.get("timeout")
    if isinstance(timeout, dict):
        values = [v for v in timeout.values() if isinstance(v, int | float)]
        if values:
            return float(max(values))
    return default


class FailoverTransport(httpx.BaseTransport):
    """Sends each request to the replica believed to lead, and moves on when it does not.

    ``urls`` are the replicas' base URLs (the client's ``base_url`` is the first).
    ``transport`` carries each attempt (an ``httpx.HTTPTransport`` by default).
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        transport: httpx.BaseTransport | None = None,
        default_budget: float = 5.0,
    ) -> None:
        self.urls = [httpx.URL(u) for u in parse_base_urls(urls)]
        self._inner = transport if transport is not None else httpx.HTTPTransport()
        self._default_budget = default_budget
        self._lock = threading.Lock()
        self._preferred: httpx.URL = self.urls[0]
        #: Attempts moved elsewhere: redirects followed, replicas skipped.
        self.redirects = 0
        self.skips = 0

    @property
    def preferred(self) -> str:
        """The base URL the next request goes to first."""
        return str(self._preferred)

    def _next_after(self, base: httpx.URL) -> httpx.URL:
        for i, url in enumerate(self.urls):
            if (url.host, url.port, url.scheme) == (base.host, base.port, base.scheme):
                return self.urls[(i + 1) % len(self.urls)]
        return self.urls[0]  # a redirect target outside the list: start over

    @staticmethod
    def _on(base: httpx.URL, request: httpx.Request) -> httpx.URL:
        return request.url.copy_with(scheme=base.scheme, host=base.host, port=base.port)

    def _attempt(self, request: httpx.Request, url: httpx.URL, remaining: float) -> httpx.Response:
        attempt = httpx.Request(
            request.method,
            url,
            headers=request.headers,
            content=request.content,
            extensions={
                **request.extensions,
                "timeout": httpx.Timeout(max(remaining, 0.01)).as_dict(),
            },
        )
        return self._inner.handle_request(attempt)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        deadline = time.monotonic() + _budget(request, self._default_budget)
        with self._lock:
            base = self._preferred
        url = self._on(base, request)
        redirects = 0
        tried_in_round = 0
        # Replicas found down in this request: a standby that still names one as the
        # leader (its leadership has not lapsed yet) is not followed there again.
        down: set[tuple[str, int | None]] = set()
        last_error: httpx.TransportError | None = None
        last_response: httpx.Response | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if last_response is not None:
                    return last_response
                assert last_error is not None
                raise last_error
            try:
                response = self._attempt(request, url, remaining)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Never reached a server: safe to send elsewhere, whatever the method.
                last_error = exc
                self.skips += 1
                down.add((url.host, url.port))
                base = self._next_after(url)
                url = self._on(base, request)
                tried_in_round += 1
                if tried_in_round >= len(self.urls):
                    tried_in_round = 0
                    time.sleep(min(ROUND_PAUSE, max(0.0, deadline - time.monotonic())))
                continue
            location = response.headers.get("location")
            target = None if location is None else httpx.URL(location)
            if response.status_code == 307 and target is not None and redirects < MAX_REDIRECTS:
                response.read()
                response.close()
                if (target.host, target.port) not in down:
                    redirects += 1
                    self.redirects += 1
                    url = target
                    base = url.copy_with(path="/", query=None)
                    continue
                last_response = response  # it names a leader that is down: wait it out
            elif response.status_code == 503:
                response.read()
            if last_response is response or (
                response.status_code == 503 and _is_not_leader(response)
            ):
                response.close()
                last_response = response
                base = self._next_after(url)
                url = self._on(base, request)
                redirects = 0
                tried_in_round += 1
                if tried_in_round >= len(self.urls):
                    tried_in_round = 0
                    time.sleep(min(ROUND_PAUSE, max(0.0, deadline - time.monotonic())))
                continue
            with self._lock:
                self._preferred = url.copy_with(path="/", query=None)
            return response

    def close(self) -> None:
        self._inner.close()
