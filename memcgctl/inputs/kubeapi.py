"""Fetching the pods of this node: the kubelet's ``/pods`` or the API server's pod list
with a ``spec.nodeName`` field selector.  Plain ``urllib`` (no client library).

The service-account token is read again for every request: bound tokens are rotated
by the kubelet (about hourly), so a token read once at start-up would expire.

``timeout`` is one deadline for the whole request — connect, TLS, headers and body —
not a bound per read: a server that sends a byte every second would otherwise hold us
forever.  Every receive and send gets the time that is left (:class:`_DeadlineSocket`).
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from memcgctl.logic.kube import Pod, parse_pod_list
from memcgctl.vocab.errors import Malformed, OperationFailed
from memcgctl.vocab.structs import dataclass

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBELET_URL = "https://127.0.0.1:10250/pods"
MAX_RESPONSE = 64 << 20  # a node's pod list is far smaller; refuse anything unbounded
MAX_TOKEN = 64 << 10


class SourceUnavailable(OperationFailed):
    """The kubelet or API server could not be asked, or answered nonsense."""


class _DeadlineSocket:
    """A connected socket (plain or TLS) whose every receive and send ends by one
    deadline: before each call its timeout becomes the time left, and none left is a
    ``TimeoutError``.  http.client reads through :meth:`makefile`, which reads here;
    urllib closes the connection's socket after the headers, so the real close waits
    until the response's file is closed too (what ``socket.makefile`` does)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._files = 0
        self._closed = False

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self._sock.settimeout(left)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._arm()
        return self._sock.recv_into(buffer, nbytes, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._arm()
        return self._sock.recv(bufsize, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._arm()
        self._sock.sendall(data, flags)

    def makefile(self, mode: str = "rb", buffering: int | None = None, **_: Any) -> Any:
        self._files += 1  # http.client reads its response through one "rb" file
        raw = socket.SocketIO(self, "rb")  # type: ignore[arg-type]
        return io.BufferedReader(raw, buffering or io.DEFAULT_BUFFER_SIZE)

    def _decref_socketios(self) -> None:  # SocketIO.close
        self._files -= 1
        if self._closed and self._files <= 0:
            self._sock.close()

    def close(self) -> None:
        self._closed = True
        if self._files <= 0:
            self._sock.close()

    def __getattr__(self, name: str) -> Any:  # fileno, setsockopt, getpeercert, …
        return getattr(self._sock, name)


def _deadline_handlers(deadline: float, context: ssl.SSLContext | None) -> list[Any]:
    """urllib handlers whose connections keep ``deadline`` (a ``time.monotonic()``)."""

    def left() -> float:
        return max(deadline - time.monotonic(), 0.001)

    class HTTP(http.client.HTTPConnection):
        def connect(self) -> None:
            self.timeout = left()
            super().connect()
            self.sock = _DeadlineSocket(self.sock, deadline)

    class HTTPS(http.client.HTTPSConnection):
        def connect(self) -> None:
            self.timeout = left()  # TCP connect, then the TLS handshake: each bounded
            super().connect()
            self.sock = _DeadlineSocket(self.sock, deadline)

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(HTTP, req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(HTTPS, req, context=context)

    return [HTTPHandler(), HTTPSHandler(context=context)]


def api_server_pods_url(api_server: str, node: str) -> str:
    """The API server's list of the pods bound to ``node``."""
    selector = urllib.parse.quote(f"spec.nodeName={node}", safe="")
    return f"{api_server.rstrip('/')}/api/v1/pods?fieldSelector={selector}"


@dataclass
class PodSource:
    url: str
    token_file: Path | None = None  # None: send no Authorization header
    ca_file: Path | None = None  # None: the system's CAs
    insecure: bool = False  # do not verify the server's certificate (kubelet only)
    timeout: float = 5.0

    def describe(self) -> str:
        return self.url.split("?", 1)[0]

    def _token(self) -> str | None:
        if self.token_file is None:
            return None
        try:
            with open(self.token_file, "rb") as f:
                data = f.read(MAX_TOKEN + 1)
        except OSError as exc:
            raise SourceUnavailable(
                f"{self.token_file}: cannot read the token ({exc.strerror})"
            ) from exc
        token = data.decode("ascii", "replace").strip()
        if not token or len(data) > MAX_TOKEN or any(c in token for c in "\r\n"):
            raise SourceUnavailable(f"{self.token_file}: not a bearer token")
        return token

    def _context(self) -> ssl.SSLContext | None:
        if not self.url.startswith("https:"):
            return None
        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        cafile = str(self.ca_file) if self.ca_file is not None else None
        try:
            return ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise SourceUnavailable(f"{cafile}: cannot load the CA ({exc})") from exc

    def fetch_bytes(self) -> bytes:
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        token = self._token()
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        where = self.describe()
        deadline = time.monotonic() + self.timeout
        opener = urllib.request.build_opener(*_deadline_handlers(deadline, self._context()))
        try:
            with opener.open(request, timeout=self.timeout) as response:
                data: bytes = response.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as exc:
            raise SourceUnavailable(f"{where}: HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise SourceUnavailable(self._late(where)) from exc
            raise SourceUnavailable(f"{where}: {exc.reason}") from exc
        except TimeoutError as exc:
            raise SourceUnavailable(self._late(where)) from exc
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # timeouts, resets, a truncated body, a malformed URL
            raise SourceUnavailable(f"{where}: {exc}") from exc
        if len(data) > MAX_RESPONSE:
            raise SourceUnavailable(f"{where}: response larger than {MAX_RESPONSE >> 20} MiB")
        return data

    def _late(self, where: str) -> str:
        return f"{where}: no complete answer within {self.timeout:g}s (--timeout)"

    def fetch(self) -> tuple[list[Pod], list[str]]:
        """(pods, problems with single items).  SourceUnavailable for anything that
        leaves us without a pod list."""
        from memcgctl.state.statedir import loads_bounded

        data = self.fetch_bytes()
        try:
            return parse_pod_list(loads_bounded(data))
        except Malformed as exc:  # statedir.Corrupt, kube.PodListError
            raise SourceUnavailable(f"{self.describe()}: {exc}") from exc
