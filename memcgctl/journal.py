"""The append-only journal in the state directory (SPEC §4).

JSON lines, one event each: kills memcgctl performed (kill-all, daemon; ``kind:
user_kill`` and daemon decisions) and every kernel OOM kill memcgctl has seen in the
kernel log (deduplicated by boot id + the kmsg sequence number, the ``dedup`` key).

* Concurrent writers: an flock on ``journal.lock`` around every append.
* Crash mid-write: a torn last line is skipped by readers, and the next writer starts
  on a fresh line.
* Bounded: when the file passes ``max_bytes`` it is renamed to ``journal.jsonl.1``
  (replacing the previous one) and a new file is started.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from memcgctl.errors import from_oserror
from memcgctl.statedir import locked

DEFAULT_MAX_BYTES = 4 << 20


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Journal:
    FILE = "journal.jsonl"
    LOCK = "journal.lock"

    def __init__(self, state_dir: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.state_dir = state_dir
        self.path = state_dir / self.FILE
        self.rotated = state_dir / (self.FILE + ".1")
        self.max_bytes = max_bytes

    def read(self) -> Iterator[dict[str, Any]]:
        """All records, oldest first (the rotated file, then the current one)."""
        for path in (self.rotated, self.path):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError:
                continue
            for line in data.split(b"\n"):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a torn line from a crash mid-write
                if isinstance(rec, dict):
                    yield rec

    def _dedup_keys(self) -> set[str]:
        return {str(r["dedup"]) for r in self.read() if "dedup" in r}

    def append(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append records; those whose ``dedup`` key is already present are dropped.

        Returns the records actually written."""
        records = list(records)
        if not records:
            return []
        with locked(self.state_dir, self.LOCK):
            if any("dedup" in r for r in records):
                known = self._dedup_keys()
                fresh = []
                for r in records:
                    key = r.get("dedup")
                    if key is not None:
                        if str(key) in known:
                            continue
                        known.add(str(key))
                    fresh.append(r)
                records = fresh
            if not records:
                return []
            payload = b"".join(
                json.dumps(r, separators=(",", ":"), sort_keys=True).encode() + b"\n"
                for r in records
            )
            try:
                self._rotate_if_needed()
                fd = os.open(
                    self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
                )
                try:
                    size = os.fstat(fd).st_size
                    if size:
                        # start on a fresh line if a writer crashed mid-line
                        with open(self.path, "rb") as f:
                            f.seek(size - 1)
                            if f.read(1) != b"\n":
                                payload = b"\n" + payload
                    os.write(fd, payload)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise from_oserror(exc, str(self.path)) from exc
        return records

    # -- the kernel-log cursor ------------------------------------------------------------
    # Every kernel kill up to this kmsg sequence number (of this boot) is in the journal,
    # so ``counters`` need not parse those records again: it still reads the ring, but
    # parses only what came after (SPEC §8 start-up budget).

    CURSOR = "kmsg.cursor"

    def read_cursor(self, boot_id: str) -> int | None:
        try:
            doc = json.loads((self.state_dir / self.CURSOR).read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("boot_id") != boot_id:
            return None
        seq = doc.get("seq")
        return seq if isinstance(seq, int) else None

    def write_cursor(self, boot_id: str, seq: int) -> None:
        """Record that every kill up to ``seq`` is journaled (never moves backwards)."""
        with locked(self.state_dir, self.LOCK):
            current = self.read_cursor(boot_id)
            if current is not None and current >= seq:
                return
            path = self.state_dir / self.CURSOR
            tmp = path.with_name(f".{self.CURSOR}.{os.getpid()}.tmp")
            try:
                tmp.write_text(json.dumps({"boot_id": boot_id, "seq": seq}))
                os.replace(tmp, path)
            except OSError as exc:
                raise from_oserror(exc, str(path)) from exc

    def _rotate_if_needed(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size >= self.max_bytes:
            os.replace(self.path, self.rotated)
