"""Running kill totals (by cause: system, memcg, user): ``counters.json`` next to the
journal.

The journal rotates (``journal.jsonl`` → ``journal.jsonl.1``, the older file dropped),
so counts recomputed from it would fall at every rotation, and reading it costs time and
memory that grow with history.  Instead every :meth:`Journal.append
<memcgctl.state.journal.Journal.append>` adds what it writes to per-cgroup, per-cause totals
kept in this small file, under the journal's lock:

* ``kills``: ``{cgroup: {system, memcg, user}}`` — kills of tasks *in* that cgroup
  (the victim's own cgroup); ``counters`` sums a subtree.  ``user_kill`` counts as
  ``user``; ``manual_kill`` (a kill-all of a healthy cgroup) counts nowhere.
* ``unattributed``: kernel kills journaled without a cgroup (the kernel rate-limited
  their report, 10 per 5 s, and the ``Killed process`` line names no cgroup); they get
  one when the kernel's per-cgroup ``oom_kill`` counters show where they happened
  (:func:`attribute`).
* ``seqs`` / ``keys``: a bounded deduplication index — the last :data:`SEQ_WINDOW`
  kmsg sequence numbers of each boot (they only increase) and the last
  :data:`KEY_WINDOW` other dedup keys — so an append never re-reads the journal.
* ``attempt``: the journal's record count and the host's ``oom_kill`` at the last
  attribution attempt (while neither moves, another cannot find more).
* ``boot_id`` / ``created``: the boot these totals count and when counting started
  (Unix time).  A new boot, or a lost or corrupt file, starts a new epoch: the totals
  are rebuilt from the journal records of this boot and ``created`` moves, which is
  how a Prometheus user tells a real reset (``memcgctl_oom_kills_created``).

Same safety rules as the journal: ``0600``, ``O_NOFOLLOW``, replaced through
``mkstemp`` + rename; a corrupt file gives one warning, is moved aside, and is rebuilt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from memcgctl.state.statedir import Corrupt, loads_bounded, read_bounded
from memcgctl.vocab.cgpath import CgroupPath

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeAlias

FILE = "counters.json"
VERSION = 1
CAUSES = ("system", "memcg", "user")
SEQ_WINDOW = 4096
KEY_WINDOW = 1024
MAX_FILE_BYTES = 16 << 20

Totals: TypeAlias = "dict[str, Any]"  # (a string: no typing at run time)


def empty(boot_id: str | None = None, created: float | None = None) -> Totals:
    return {
        "version": VERSION,
        "boot_id": boot_id,
        "created": time.time() if created is None else created,
        "kills": {},
        "last_cause": {},
        "unattributed": 0,
        "unattributed_by_cause": dict.fromkeys(CAUSES[:2], 0),
        "attributed": {},
        "seqs": {},
        "keys": [],
        "records": 0,
    }


def _is_count(v: Any) -> bool:
    return type(v) is int and v >= 0


def validate(doc: Any) -> Totals:
    """The document if it is one of ours, else :class:`Corrupt`."""
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise Corrupt("not a counters file of this version")
    if not (doc.get("boot_id") is None or isinstance(doc.get("boot_id"), str)):
        raise Corrupt("boot_id is not a string")
    created = doc.get("created")
    if not isinstance(created, int | float) or isinstance(created, bool):
        raise Corrupt("created is not a time")
    if not 0 <= created < 1e11:
        raise Corrupt("created is not a time")
    kills = doc.get("kills")
    if not isinstance(kills, dict):
        raise Corrupt("kills is not an object")
    for cg, causes in kills.items():
        if not cg.startswith("/") or not isinstance(causes, dict):
            raise Corrupt("a cgroup's kills are not an object")
        if set(causes) != set(CAUSES) or not all(_is_count(v) for v in causes.values()):
            raise Corrupt("a kill count is not a whole number")
    for key in ("last_cause", "attributed"):
        value = doc.get(key)
        if not isinstance(value, dict):
            raise Corrupt(f"{key} is not an object")
    if not all(v in CAUSES for v in doc["last_cause"].values()):
        raise Corrupt("last_cause holds an unknown cause")
    if not all(_is_count(v) for v in doc["attributed"].values()):
        raise Corrupt("attributed holds a bad count")
    if not _is_count(doc.get("unattributed")) or not _is_count(doc.get("records")):
        raise Corrupt("a count is not a whole number")
    pool = doc.get("unattributed_by_cause")
    if (
        not isinstance(pool, dict)
        or set(pool) != set(CAUSES[:2])
        or not all(_is_count(v) for v in pool.values())
        or sum(pool.values()) > doc["unattributed"]
    ):
        raise Corrupt("unattributed_by_cause is not counts of system and memcg")
    seqs = doc.get("seqs")
    if not isinstance(seqs, dict) or not all(
        isinstance(v, list) and all(_is_count(s) for s in v) for v in seqs.values()
    ):
        raise Corrupt("seqs is not lists of sequence numbers")
    attempt = doc.get("attempt")
    if attempt is not None and (
        not isinstance(attempt, list) or len(attempt) != 2 or not all(map(_is_count, attempt))
    ):
        raise Corrupt("attempt is not two counts")
    keys = doc.get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise Corrupt("keys is not a list of strings")
    return doc


def load(state_dir: Path) -> Totals | None:
    """The totals, None when there are none; :class:`Corrupt` for a bad file.
    Other OSErrors (EACCES) propagate."""
    data = read_bounded(state_dir / FILE, MAX_FILE_BYTES)
    if data is None:
        return None
    return validate(loads_bounded(data))


def dumps(doc: Totals) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


# -- deduplication -----------------------------------------------------------------------


def _split_kmsg_key(key: str) -> tuple[str, int] | None:
    boot, sep, seq = key.rpartition(":")
    if not sep or not boot or not seq.isdigit() or len(seq) > 18:
        return None
    return boot, int(seq)


def seen(doc: Totals, key: str) -> bool:
    """Whether a record with this dedup key was journaled already.  A kmsg key older
    than the window of its boot counts as seen (it was, or it is too old to count)."""
    parsed = _split_kmsg_key(key)
    if parsed is None:
        return key in doc["keys"]
    boot, seq = parsed
    window: list[int] = doc["seqs"].get(boot, [])
    if seq in window:
        return True
    return len(window) >= SEQ_WINDOW and seq < window[0]


def remember(doc: Totals, key: str) -> None:
    parsed = _split_kmsg_key(key)
    if parsed is None:
        doc["keys"].append(key)
        del doc["keys"][:-KEY_WINDOW]
        return
    boot, seq = parsed
    if boot not in doc["seqs"]:
        # a new boot: the other boots' windows are no longer needed
        doc["seqs"] = {b: w for b, w in doc["seqs"].items() if b == doc.get("boot_id")}
    window = doc["seqs"].setdefault(boot, [])
    if window and seq < window[-1]:
        import bisect

        bisect.insort(window, seq)
    else:
        window.append(seq)
    del window[:-SEQ_WINDOW]


def kmsg_seq_known(doc: Totals, boot_id: str, seq: int) -> bool:
    """Whether ``boot_id:seq`` is a journaled kill still in the index (the cursor check)."""
    return seq in doc["seqs"].get(boot_id, [])


# -- counting ----------------------------------------------------------------------------


def _cause_of(rec: Mapping[str, Any]) -> str | None:
    from memcgctl.logic.oomassembler import cause_of

    return cause_of(dict(rec))


def _cause(rec: Mapping[str, Any], doc: Totals, cg: str) -> str:
    cause = rec.get("cause") or _cause_of(rec)
    if cause in ("system", "memcg"):
        return str(cause)
    # a kill given its cgroup from the kernel's counters (its report rate-limited
    # away): the cause of the storm it is part of, the last reported in that cgroup
    last: dict[str, str] = doc["last_cause"]
    return last.get(cg) or last.get("") or "memcg"


def count(doc: Totals, rec: Mapping[str, Any]) -> None:
    """Add one journaled record to the totals."""
    doc["records"] += 1
    kind = rec.get("kind")
    cg = rec.get("cgroup")
    if kind == "oom_kill":
        if not isinstance(cg, str) or not cg.startswith("/"):
            # the "Killed process" line still says why ("Memory cgroup out of memory")
            doc["unattributed"] += 1
            known = rec.get("cause") or _cause_of(rec)
            if known in CAUSES[:2]:
                doc["unattributed_by_cause"][known] += 1
            return
        cause = _cause(rec, doc, cg)
        if rec.get("constraint") is not None or rec.get("cause") in CAUSES:
            doc["last_cause"][cg] = cause
            doc["last_cause"][""] = cause
    elif kind == "user_kill":
        if not isinstance(cg, str) or not cg.startswith("/"):
            return
        cause = "user"
    else:
        return  # manual_kill, daemon decisions, notifications: counted nowhere
    slot = doc["kills"].setdefault(cg, dict.fromkeys(CAUSES, 0))
    slot[cause] += 1


def rebuild(
    records: Iterable[Mapping[str, Any]],
    boot_id: str | None = None,
    boot_iso: str | None = None,
) -> Totals:
    """Totals from journal records (a lost or corrupt file, a new boot).  With
    ``boot_id``: only what belongs to that boot (kernel kills by their dedup key, the
    others by ``time >= boot_iso``)."""
    doc = empty(boot_id)
    for rec in records:
        key = rec.get("dedup")
        if boot_id is not None:
            parsed = _split_kmsg_key(str(key)) if key is not None else None
            if parsed is not None:
                if parsed[0] != boot_id:
                    continue
            elif boot_iso is not None and str(rec.get("time", "")) < boot_iso:
                continue
        if key is not None:
            if seen(doc, str(key)):
                continue
            remember(doc, str(key))
        count(doc, rec)
    return doc


def subtree(doc: Totals, cg: CgroupPath) -> dict[str, int]:
    """Kills by cause of tasks in ``cg``'s subtree."""
    from memcgctl.vocab.cgpath import in_subtree

    out = dict.fromkeys(CAUSES, 0)
    if cg == "/":
        # kills not given a cgroup yet are somewhere on the host: count the ones whose
        # cause is known (attributing them later moves them, it does not add)
        for cause, n in doc["unattributed_by_cause"].items():
            out[cause] += n
    for other, causes in doc["kills"].items():
        if in_subtree(other, cg):
            for cause in CAUSES:
                out[cause] += causes[cause]
    return out


def attribute(doc: Totals, local_kills: Mapping[str, int]) -> int:
    """Give unattributed kernel kills the cgroups whose kernel ``oom_kill`` counter
    (local: v1 ``memory.oom_control``, v2 ``memory.events.local``) is above the kills
    counted there, deepest first.  Never more than were journaled without a cgroup.
    Returns how many were attributed."""
    done = 0
    for cg in sorted(local_kills, key=lambda c: (-c.count("/"), c)):
        if doc["unattributed"] <= 0:
            break
        slot = doc["kills"].get(cg, dict.fromkeys(CAUSES, 0))
        missing = local_kills[cg] - slot["system"] - slot["memcg"]
        if missing <= 0:
            continue
        n = min(missing, doc["unattributed"])
        # the causes the kill lines gave, the one of the storm's reports first
        pool: dict[str, int] = doc["unattributed_by_cause"]
        preferred = _cause({}, doc, cg)
        left = n
        for cause in (preferred, *(c for c in CAUSES[:2] if c != preferred)):
            take = min(left, pool[cause])
            pool[cause] -= take
            slot[cause] += take
            left -= take
        if left:  # kill lines that said nothing about the cause
            slot[preferred] += left
        doc["kills"][cg] = slot
        doc["attributed"][cg] = doc["attributed"].get(cg, 0) + n
        doc["unattributed"] -= n
        done += n
    return done
