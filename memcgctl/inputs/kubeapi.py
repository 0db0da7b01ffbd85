"""Fetching the pods of this node: the kubelet's ``/pods`` or the API server's pod list
with a ``spec.nodeName`` field selector.  Plain ``urllib`` (no client library).

The service-account token is read again for every request: bound tokens are rotated
by the kubelet (about hourly), so a token read once at start-up would expire.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from memcgctl.logic.kube import Pod, parse_pod_list
from memcgctl.vocab.errors import Malformed, OperationFailed

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBELET_URL = "https://127.0.0.1:10250/pods"
MAX_RESPONSE = 64 << 20  # a node's pod list is far smaller; refuse anything unbounded
MAX_TOKEN = 64 << 10


class SourceUnavailable(OperationFailed):
    """The kubelet or API server could not be asked, or answered nonsense."""


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
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout, context=self._context()
            ) as response:
                data: bytes = response.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as exc:
            raise SourceUnavailable(f"{where}: HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            raise SourceUnavailable(f"{where}: {exc.reason}") from exc
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # timeouts, resets, a truncated body, a malformed URL
            raise SourceUnavailable(f"{where}: {exc}") from exc
        if len(data) > MAX_RESPONSE:
            raise SourceUnavailable(f"{where}: response larger than {MAX_RESPONSE >> 20} MiB")
        return data

    def fetch(self) -> tuple[list[Pod], list[str]]:
        """(pods, problems with single items).  SourceUnavailable for anything that
        leaves us without a pod list."""
        from memcgctl.state.statedir import loads_bounded

        data = self.fetch_bytes()
        try:
            return parse_pod_list(loads_bounded(data))
        except Malformed as exc:  # statedir.Corrupt, kube.PodListError
            raise SourceUnavailable(f"{self.describe()}: {exc}") from exc
