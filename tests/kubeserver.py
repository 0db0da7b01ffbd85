"""A kubelet (or API server) stand-in on 127.0.0.1 for ``memcgctl kube`` tests.

It answers the pod list only with the right bearer token (401 otherwise, as the
kubelet does), serves the given pod lists one per request (the last one repeats, so
pods appear and disappear between requests), can be switched "down" (503), and
records every request's path and Authorization header.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeKubelet:
    def __init__(self, lists: list[Any], token: str, path: str = "/pods") -> None:
        self.lists = lists
        self.token = token
        self.path = path
        self.down = False
        self.requests: list[tuple[str, str | None]] = []
        self.served = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                with outer._lock:
                    outer.requests.append((self.path, auth))
                    if outer.down:
                        self._send(503, {"kind": "Status", "message": "unavailable"})
                        return
                    if auth != f"Bearer {outer.token}":
                        self._send(401, {"kind": "Status", "message": "Unauthorized"})
                        return
                    if self.path != outer.path:
                        self._send(404, {"kind": "Status", "message": "not found"})
                        return
                    doc = outer.lists[min(outer.served, len(outer.lists) - 1)]
                    outer.served += 1
                self._send(200, doc)

            def _send(self, code: int, doc: Any) -> None:
                body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def served_count(self) -> int:
        with self._lock:
            return self.served


@contextmanager
def fake_kubelet(lists: list[Any], token: str, path: str = "/pods") -> Iterator[FakeKubelet]:
    fk = FakeKubelet(lists, token, path)
    thread = threading.Thread(target=fk.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fk
    finally:
        fk.server.shutdown()
        fk.server.server_close()
        thread.join(5)


class SlowKubelet:
    """A kubelet that never finishes an answer: it sends the status line and headers
    (``drip="body"``) or only the status line (``drip="headers"``), then one byte every
    ``every`` seconds, so a client's per-read timeout never fires.  ``tls``: an
    ``ssl.SSLContext`` to serve HTTPS with.  Counts the connections it saw and the
    ones the client closed."""

    def __init__(self, drip: str, every: float, tls: ssl.SSLContext | None = None) -> None:
        self.drip = drip
        self.every = every
        self.tls = tls
        self.connections = 0
        self.dropped = 0  # clients that went away (a send failed)
        self._stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/pods"
        self._threads: list[threading.Thread] = []

    def serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            t = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _answer(self, raw: socket.socket) -> None:
        self.connections += 1
        conn: socket.socket = raw
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(raw, server_side=True)
            conn.settimeout(5)
            conn.recv(65536)  # the request
            head = b"HTTP/1.1 200 OK\r\n"
            if self.drip == "body":
                head += b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            conn.sendall(head)
            while not self._stop.wait(self.every):
                conn.sendall(b" " if self.drip == "body" else b"X")
        except OSError:
            self.dropped += 1
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)


@contextmanager
def slow_kubelet(
    drip: str, every: float, tls: ssl.SSLContext | None = None
) -> Iterator[SlowKubelet]:
    sk = SlowKubelet(drip, every, tls)
    thread = threading.Thread(target=sk.serve, daemon=True)
    thread.start()
    try:
        yield sk
    finally:
        sk.stop()
        thread.join(5)
        sk.sock.close()
