"""The OOM killer's kernel log lines recognised, one line at a time (pure functions, no I/O).

Formats (mm/oom_kill.c, mm/memcontrol.c), 4.19 to 6.x:

* ``COMM invoked oom-killer: gfp_mask=0x…(…), [nodemask=…, ]order=N, oom_score_adj=N``
* 4.19 memcg report: ``Task in PATH killed as a result of limit of PATH``;
  ``memory: usage NkB, limit NkB, failcnt N``; ``Memory cgroup stats for PATH:``
* 5.0+ summary: ``oom-kill:constraint=C,nodemask=…[,cpuset=…,mems_allowed=…],
  {oom_memcg=PATH|global_oom}[,task_memcg=PATH],task=COMM,pid=N,uid=N``
* ``MSG: Killed process PID (COMM) total-vm:NkB, anon-rss:NkB, file-rss:NkB,
  shmem-rss:NkB[, UID:N pgtables:NkB oom_score_adj:N]``; 4.19: ``MSG: Kill process PID
  (COMM) score S or sacrifice child`` then an unprefixed ``Killed process …``
* ``Tasks in PATH are going to be killed due to memory.oom.group set``
* ``oom_reaper: reaped process PID (COMM), now anon-rss:…`` / ``oom_reaper: unable to
  reap pid:PID (COMM)``
* ``MSG: OOM victim PID (COMM) is already exiting. Skip killing the task``
* ``Out of memory and no killable processes...``
* the report's context, for ``explain-kill``: ``Tasks state (memory values in pages):``, the
  ``[ pid ]`` header and its rows (any column layout since 3.x), ``N pages RAM``,
  ``N pages reserved``, ``Total swap = NkB``, and the stack dump's ``CPU: N PID: N Comm: C
  … RELEASE`` line; 3.x-4.x vendor kill lines ``Killed process N (C), UID U,`` and
  ``Killed process N, UID U, (C)``; a kill line cut short yields pid and comm (``partial``)

COMM is the task's comm: up to 15 bytes, any bytes but NUL, so it may hold spaces, commas
and parentheses.  Where a fixed suffix follows it (`` total-vm:``, ``) score ``), the
comm is everything up to that suffix, not up to the first ``)``.

:func:`parse_oom_line` names the format of a line and gives its values (:class:`OomLine`).
"""

from __future__ import annotations

import re

from memcgctl.vocab.structs import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class _Pattern:
    """A regular expression compiled on first use: most kernel logs hold no OOM report,
    and ``counters`` is a one-shot command that must start fast."""

    __slots__ = ("_rx", "_src")

    def __init__(self, src: str) -> None:
        self._src = src
        self._rx: re.Pattern[str] | None = None

    def match(self, text: str) -> re.Match[str] | None:
        rx = self._rx
        if rx is None:
            rx = self._rx = re.compile(self._src)
        return rx.match(text)


_MSG = r"(?:(?P<msg>[^:]*?(?:out of memory|Out of memory)[^:]*): )?"

_RE_INVOKED = _Pattern(
    r"^(?P<comm>.*) invoked oom-killer: gfp_mask=(?P<gfp>0x[0-9a-fA-F]+)(?:\((?P<gfp_flags>[^)]*)\))?"
    r"(?:, nodemask=(?P<nodemask>.*?))?, order=(?P<order>-?\d+)"
    r"(?:, oom_score_adj=(?P<adj>-?\d+))?"
)
_RE_TASK_IN = _Pattern(
    r"^Task in (?P<task_memcg>.*) killed as a result of limit of (?P<oom_memcg>.*)$"
)
_RE_MEMCG_USAGE = _Pattern(
    r"^(?P<counter>memory|memory\+swap|swap|kmem): usage (?P<usage>\d+)kB, limit (?P<limit>\d+)kB, failcnt (?P<failcnt>\d+)"
)
_RE_MEMCG_STATS = _Pattern(r"^Memory cgroup stats for (?P<path>.*):$")
_RE_KILLED = _Pattern(
    r"^" + _MSG + r"Killed process (?P<pid>\d+)(?:, UID (?P<uid0>\d+),)? \((?P<comm>.*)\)"
    r"(?:,? UID (?P<uid1>\d+),)? (?:total-vm|vsz):(?P<total_vm>\d+)kB, "
    r"anon-rss:(?P<anon>\d+)kB, file-rss:(?P<file>\d+)kB(?:, shmem-rss:(?P<shmem>\d+)kB)?"
    r"(?:,? UID:(?P<uid>\d+))?(?: pgtables:(?P<pgtables>\d+)kB)?(?: oom_score_adj:(?P<adj>-?\d+))?"
)
# a kill line cut short (a truncated paste, a full ring): what it still says
_RE_KILLED_PARTIAL = _Pattern(
    r"^"
    + _MSG
    + r"Killed process (?P<pid>\d+)(?:, UID (?P<uid0>\d+),)? \((?P<comm>.*?)\)(?P<tail>.*)$"
)
_KILLED_TAILS = (" total-vm:", ", UID ", " vsz:")


def _truncated_tail(tail: str) -> bool:
    """What follows ``(COMM)`` on a kill line cut short: nothing, or the start of the
    sizes (never other text: that is some other message)."""
    return not tail or any(tail.startswith(t) or t.startswith(tail) for t in _KILLED_TAILS)


_RE_TASKS_HEADER = _Pattern(r"^\[ *pid *\] +uid +tgid +(?P<cols>.*)$")
_RE_TASK_ROW = _Pattern(r"^\[ *(?P<pid>\d+)\] +(?P<rest>-?\d+ .*)$")
_RE_CPU = _Pattern(
    r"^(?:CPU: \d+ (?:UID: \d+ )?PID: |Pid: )(?P<pid>\d+),? [Cc]omm: (?P<comm>.*?) "
    r"(?:Not tainted|Tainted: [^0-9]*?) *(?P<release>\d+\.\d+[\w.+~-]*)"
)
_RE_KILL_419 = _Pattern(
    r"^"
    + _MSG
    + r"Kill process (?P<pid>\d+) \((?P<comm>.*)\) score (?P<score>\d+) or sacrifice child$"
)
_RE_GROUP = _Pattern(
    r"^Tasks in (?P<path>.*) are going to be killed due to memory\.oom\.group set$"
)
_RE_REAPED = _Pattern(
    r"^oom_reaper: reaped process (?P<pid>\d+) \((?P<comm>.*)\), now anon-rss:(?P<anon>\d+)kB, "
    r"file-rss:(?P<file>\d+)kB, shmem-rss:(?P<shmem>\d+)kB"
)
_RE_UNABLE = _Pattern(r"^oom_reaper: unable to reap pid:(?P<pid>\d+) \((?P<comm>.*)\)$")
_RE_EXITING = _Pattern(
    r"^"
    + _MSG
    + r"OOM victim (?P<pid>\d+) \((?P<comm>.*)\) is already exiting\. Skip killing the task$"
)


_SUMMARY_KEYS = frozenset(
    {"constraint", "nodemask", "cpuset", "mems_allowed", "oom_memcg", "task_memcg", "task",
     "pid", "uid"}
)  # fmt: skip
# how a saved line shows it was cut short: ``less -S``/a terminal (``>``), journalctl's
# ellipsis (``...`` or ``…``)
_CUT_MARKS = ("...", "\u2026", ">")


def parse_summary(text: str) -> dict[str, Any] | None:
    """The ``oom-kill:`` summary line (5.0+, and vendor 3.10 backports), read as its
    ``key=value`` fields in any order, any of them missing: an empty constraint
    (``oom-kill:,cpuset=…``), no ``cpuset=``/``mems_allowed=``, no memcg fields (5.8-rc).
    A line cut short (ends in ``>``, ``...`` or ``…``) gives what precedes the cut; the
    field it cut is unknown (None) and ``cut`` says where the cut was.  None if the line
    has no field this parser knows."""
    body = text[len("oom-kill:") :].rstrip()
    cut: str | None = None
    for mark in _CUT_MARKS:
        if body.endswith(mark):
            body = body[: -len(mark)]
            cut = mark
            break
    values: dict[str, str] = {}
    flags: set[str] = set()
    # task=COMM may hold commas: it ends at the last ",pid="
    t = body.find(",task=") + 1 if not body.startswith("task=") else 0
    if (t > 0 or body.startswith("task=")) and cut is None:
        p = body.rfind(",pid=")
        if p > t:
            values["task"] = body[t + 5 : p]
            body = body[:t].rstrip(",") + body[p:]
    last: str | None = None
    for token in body.split(","):
        key, eq, value = token.partition("=")
        if eq and key in _SUMMARY_KEYS:
            values[key] = value
            last = key
        elif token == "global_oom":
            flags.add(token)
            last = None
        elif last is not None:
            values[last] += "," + token  # a node list (0-1,3) or a path with a comma
        elif token:
            last = None
    partial: str | None = None
    if cut is not None:
        partial = last  # the field the cut went through
        if last is not None:
            values[last + "@cut"] = values.pop(last)
    if not values and not flags:
        return None

    def num(key: str) -> int | None:
        v = values.get(key)
        return int(v) if v is not None and v.isdigit() else None

    out: dict[str, Any] = {
        "constraint": values.get("constraint") or None,
        "oom_memcg": values.get("oom_memcg") or None,
        "global_oom": "global_oom" in flags,
        "task_memcg": values.get("task_memcg") or None,
        "cpuset": values.get("cpuset"),
        "comm": values.get("task"),
        "pid": num("pid"),
        "uid": num("uid"),
    }
    if cut is not None:
        out["cut"] = f"{partial}={values[partial + '@cut']}{cut}" if partial is not None else cut
    return out


# the message of a memcg OOM's kill line (``mem_cgroup_out_of_memory``)
MEMCG_OOM_MESSAGE = "Memory cgroup out of memory"


class OomLine(NamedTuple):
    """One understood line: ``what`` names the format, ``fields`` its values."""

    what: str
    fields: dict[str, Any]


def _ints(m: re.Match[str], *names: str) -> dict[str, int]:
    out = {}
    for name in names:
        value = m.group(name)
        if value is not None:
            out[name] = int(value)
    return out


def parse_oom_line(text: str) -> OomLine | None:
    """Recognise one OOM-related kernel log line; None for anything else.  Never raises
    for any input."""
    if not text:
        return None
    head = text[:40]
    if "invoked oom-killer" in text:
        m = _RE_INVOKED.match(text)
        if m:
            return OomLine(
                "invoked",
                {
                    "comm": m.group("comm"),
                    "gfp_mask": m.group("gfp"),
                    **_ints(m, "order", "adj"),
                },
            )
        return None
    if head.startswith("oom-kill:"):
        summary = parse_summary(text)
        return OomLine("summary", summary) if summary is not None else None
    if "Killed process " in text:
        m = _RE_KILLED.match(text)
        if not m:
            m = _RE_KILLED_PARTIAL.match(text)
            if not m or not _truncated_tail(m.group("tail")):
                return None
            uid0 = m.group("uid0")
            part: dict[str, Any] = {
                "message": m.group("msg"),
                "pid": int(m.group("pid")),
                "comm": m.group("comm"),
                "partial": True,
            }
            if uid0 is not None:
                part["uid"] = int(uid0)
            return OomLine("killed", part)
        f: dict[str, Any] = {
            "message": m.group("msg"),
            "pid": int(m.group("pid")),
            "comm": m.group("comm"),
            "total_vm_kb": int(m.group("total_vm")),
            "anon_rss_kb": int(m.group("anon")),
            "file_rss_kb": int(m.group("file")),
            "shmem_rss_kb": int(m.group("shmem")) if m.group("shmem") is not None else None,
        }
        for key, name in (
            ("uid", "uid0"),
            ("uid", "uid1"),
            ("uid", "uid"),
            ("pgtables_kb", "pgtables"),
            ("oom_score_adj", "adj"),
        ):
            if m.group(name) is not None:
                f[key] = int(m.group(name))
        return OomLine("killed", f)
    if "Kill process " in text:
        m = _RE_KILL_419.match(text)
        if m:
            return OomLine(
                "kill_select",
                {
                    "message": m.group("msg"),
                    "pid": int(m.group("pid")),
                    "comm": m.group("comm"),
                    "score": int(m.group("score")),
                },
            )
        return None
    if head.startswith("Tasks in "):
        m = _RE_GROUP.match(text)
        return OomLine("oom_group", {"cgroup": m.group("path")}) if m else None
    if head.startswith("oom_reaper: "):
        m = _RE_REAPED.match(text)
        if m:
            return OomLine(
                "reaped",
                {
                    "pid": int(m.group("pid")),
                    "comm": m.group("comm"),
                    "anon_rss_kb": int(m.group("anon")),
                    "file_rss_kb": int(m.group("file")),
                    "shmem_rss_kb": int(m.group("shmem")),
                },
            )
        m = _RE_UNABLE.match(text)
        if m:
            return OomLine("reap_failed", {"pid": int(m.group("pid")), "comm": m.group("comm")})
        return None
    if "is already exiting" in text:
        m = _RE_EXITING.match(text)
        if m:
            return OomLine(
                "already_exiting",
                {"message": m.group("msg"), "pid": int(m.group("pid")), "comm": m.group("comm")},
            )
        return None
    if text.startswith("Out of memory and no killable processes"):
        return OomLine("no_killable", {})
    if text[:1] == "[":
        m = _RE_TASK_ROW.match(text)
        if m:
            return OomLine("task_row", {"pid": int(m.group("pid")), "rest": m.group("rest")})
        m = _RE_TASKS_HEADER.match(text)
        if m:
            return OomLine("tasks_header", {"columns": m.group("cols").split()})
        return None
    if text.endswith(" pages RAM"):
        n = text[: -len(" pages RAM")].strip()
        return OomLine("ram_pages", {"pages": int(n)}) if n.isdigit() else None
    if text.endswith(" pages reserved"):
        n = text[: -len(" pages reserved")].strip()
        return OomLine("reserved_pages", {"pages": int(n)}) if n.isdigit() else None
    if text.startswith("Total swap = ") and text.endswith("kB"):
        n = text[len("Total swap = ") : -2].strip()
        return OomLine("swap_total", {"kb": int(n)}) if n.isdigit() else None
    if head.startswith(("CPU: ", "Pid: ")):
        m = _RE_CPU.match(text)
        if m:
            return OomLine(
                "cpu",
                {
                    "pid": int(m.group("pid")),
                    "comm": m.group("comm"),
                    "release": m.group("release"),
                },
            )
        return None
    if head.startswith("Tasks state"):
        return OomLine("tasks_state", {})
    if head.startswith("Task in "):
        m = _RE_TASK_IN.match(text)
        if m:
            return OomLine(
                "task_in", {"task_memcg": m.group("task_memcg"), "oom_memcg": m.group("oom_memcg")}
            )
        return None
    if head.startswith(("memory", "swap:", "kmem:")):
        m = _RE_MEMCG_USAGE.match(text)
        if m:
            return OomLine(
                "memcg_usage",
                {"counter": m.group("counter"), **_ints(m, "usage", "limit", "failcnt")},
            )
        return None
    if head.startswith("Memory cgroup stats for "):
        m = _RE_MEMCG_STATS.match(text)
        return OomLine("memcg_stats", {"cgroup": m.group("path")}) if m else None
    return None
