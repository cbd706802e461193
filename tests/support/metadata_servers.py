"""Local metadata servers on 127.0.0.1 that speak the documented EC2 and GCE protocols.

``Ec2Metadata`` is IMDSv2 with tokens required: ``PUT /latest/api/token`` with
``X-aws-ec2-metadata-token-ttl-seconds`` (1..21600) answers a session token; every GET
under ``/latest/meta-data/`` without a valid ``X-aws-ec2-metadata-token`` is a 401.
``spot/instance-action`` and ``events/recommendations/rebalance`` are 404 until the test
sets them, then the JSON AWS documents.

``GceMetadata`` answers ``/computeMetadata/v1/instance/preempted`` with ``FALSE`` or
``TRUE`` and an ETag, only to requests with ``Metadata-Flavor: Google`` (403 otherwise).
``wait_for_change=true`` hangs until the value differs from ``last_etag`` (or, without
one, until the next change), or until ``timeout_sec``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def _utc(seconds_from_now: float) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_from_now)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread; records every request."""

    def __init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner._record(self)
                owner.get(self)

            def do_PUT(self) -> None:
                owner._record(self)
                owner.put(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _record(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append((handler.command, handler.path, dict(handler.headers.items())))

    def requests_to(self, path: str) -> list[tuple[str, str, dict[str, str]]]:
        with self._lock:
            return [r for r in self.requests if urlsplit(r[1]).path == path]

    @staticmethod
    def answer(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: str,
        headers: dict[str, str] | None = None,
        content_type: str = "text/plain",
    ) -> None:
        data = body.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def get(self, handler: BaseHTTPRequestHandler) -> None:
        self.answer(handler, 404, "Not Found")

    def put(self, handler: BaseHTTPRequestHandler) -> None:
        self.answer(handler, 405, "Method Not Allowed")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class Ec2Metadata(_Server):
    TOKEN_PATH = "/latest/api/token"
    ACTION_PATH = "/latest/meta-data/spot/instance-action"
    REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"

    def __init__(self) -> None:
        super().__init__()
        self.tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.instance_action: dict[str, str] | None = None
        self.rebalance: dict[str, str] | None = None

    def interrupt(self, in_seconds: float = 120.0, action: str = "terminate") -> None:
        """Issue the spot interruption notice: ``action`` at ``in_seconds`` from now."""
        self.instance_action = {"action": action, "time": _utc(in_seconds)}

    def recommend_rebalance(self) -> None:
        self.rebalance = {"noticeTime": _utc(0)}

    def revoke_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def put(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path != self.TOKEN_PATH:
            self.answer(handler, 404, "Not Found")
            return
        ttl = handler.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        if ttl is None or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            self.answer(handler, 400, "Bad Request")
            return
        token = secrets.token_urlsafe(32)
        with self._lock:
            self.tokens[token] = time.monotonic() + int(ttl)
        self.answer(handler, 200, token, {"X-aws-ec2-metadata-token-ttl-seconds": ttl})

    def _token_ok(self, handler: BaseHTTPRequestHandler) -> bool:
        token = handler.headers.get("X-aws-ec2-metadata-token")
        with self._lock:
            expiry = self.tokens.get(token or "")
        return expiry is not None and time.monotonic() < expiry

    def get(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        if not path.startswith("/latest/meta-data/"):
            self.answer(handler, 404, "Not Found")
        elif not self._token_ok(handler):
            self.answer(handler, 401, "Unauthorized")  # IMDSv2: tokens required
        elif path == self.ACTION_PATH and self.instance_action is not None:
            self.answer(handler, 200, json.dumps(self.instance_action), content_type="text/plain")
        elif path == self.REBALANCE_PATH and self.rebalance is not None:
            self.answer(handler, 200, json.dumps(self.rebalance), content_type="text/plain")
        else:
            self.answer(handler, 404, "Not Found")


class GceMetadata(_Server):
    PATH = "/computeMetadata/v1/instance/preempted"

    def __init__(self) -> None:
        super().__init__()
        self.preempted = False
        self._changed = threading.Condition(self._lock)
        self.waiting = 0  # requests hanging in wait_for_change right now

    @property
    def etag(self) -> str:
        return hashlib.sha256(str(self.preempted).encode()).hexdigest()[:16]

    def preempt(self) -> None:
        with self._changed:
            self.preempted = True
            self._changed.notify_all()

    def get(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        if url.path != self.PATH:
            self.answer(handler, 404, "Not Found")
            return
        if handler.headers.get("Metadata-Flavor") != "Google":
            self.answer(handler, 403, "Missing Metadata-Flavor:Google header.")
            return
        query = parse_qs(url.query)
        if query.get("wait_for_change", ["false"])[0].lower() == "true":
            timeout = float(query.get("timeout_sec", ["60"])[0])
            last = query.get("last_etag", [None])[0]
            with self._changed:
                start_etag = self.etag if last is None else last
                self.waiting += 1
                try:
                    self._changed.wait_for(lambda: self.etag != start_etag, timeout)
                finally:
                    self.waiting -= 1
        with self._lock:
            value, etag = ("TRUE" if self.preempted else "FALSE"), self.etag
        self.answer(handler, 200, value, {"ETag": etag, "Metadata-Flavor": "Google"})


@contextmanager
def ec2_metadata() -> Iterator[Ec2Metadata]:
    server = Ec2Metadata()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def gce_metadata() -> Iterator[GceMetadata]:
    server = GceMetadata()
    server.start()
    try:
        yield server
    finally:
        server.stop()
