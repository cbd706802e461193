"""A fault-injecting TCP proxy: forwards to a server until told to black-hole.

Black-holing keeps every connection open and accepts new ones, but forwards nothing
in either direction: to the client the server looks alive and silent, the way a
network partition looks (no reset, no error, just no answers).

``cut_after(marker)`` loses one answer: the next client message holding ``marker``
reaches the server, the server's answer is read and dropped, and that connection is
closed. For a COMMIT, the server has committed and the client cannot know it.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._marker: bytes | None = None
        self.cut = threading.Event()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def blackhole(self) -> None:
        self._forwarding.clear()

    def restore(self) -> None:
        self._forwarding.set()

    def cut_after(self, marker: bytes) -> None:
        self.cut.clear()
        self._marker = marker

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                if not self._forwarding.is_set():
                    # Read nothing: the kernel buffers fill and the sender stalls.
                    self._forwarding.wait(0.05)
                    continue
                ready, _, _ = select.select([a, b], [], [], 0.05)
                for sock in ready:
                    if not self._forwarding.is_set():
                        break
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
                    marker = self._marker
                    if sock is a and marker is not None and marker in data:
                        self._marker = None
                        b.settimeout(10)
                        b.recv(65536)  # the server's answer: it has acted on the message
                        self.cut.set()
                        return
        except OSError:
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._stop.set()
        self._forwarding.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
