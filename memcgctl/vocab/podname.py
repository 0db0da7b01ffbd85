"""A Kubernetes pod's name as memcgctl shows it next to a cgroup: ``namespace/name``.

The label is read from a cgroup's extended attribute, which a delegated user can write
(``user.memcgctl.pod``), so it is accepted only in the shape Kubernetes itself allows:
the namespace a DNS-1123 label (at most 63 characters), the pod's name a DNS-1123
subdomain (at most 253): lower-case ASCII letters, digits, ``-`` (and ``.`` in the
name), starting and ending with a letter or digit.  Anything else is no label at all.
"""

from __future__ import annotations

import re

NAMESPACE_MAX = 63
NAME_MAX = 253
POD_LABEL_MAX = NAMESPACE_MAX + 1 + NAME_MAX

_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_NAMESPACE = _LABEL  # compiled (and cached by re) on first use
_NAME = rf"{_LABEL}(?:\.{_LABEL})*"


def valid_pod_label(text: str) -> bool:
    """True for ``namespace/name`` in the shape Kubernetes allows (see module doc)."""
    if len(text) > POD_LABEL_MAX:
        return False
    namespace, slash, name = text.partition("/")
    return (
        slash == "/"
        and len(namespace) <= NAMESPACE_MAX
        and len(name) <= NAME_MAX
        and re.fullmatch(_NAMESPACE, namespace, re.ASCII) is not None
        and re.fullmatch(_NAME, name, re.ASCII) is not None
    )


def parse_pod_label(raw: bytes | None) -> str | None:
    """An xattr's bytes as a pod label; None for none or anything not pod-shaped."""
    if raw is None or len(raw) > POD_LABEL_MAX:
        return None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if valid_pod_label(text) else None
