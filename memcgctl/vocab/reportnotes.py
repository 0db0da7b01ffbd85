"""What ``explain-kill`` says about a saved OOM report, as data: the verdict, and each
finding as a code with its numbers (:class:`ReportNote`).  :mod:`memcgctl.logic.postmortem`,
:mod:`memcgctl.logic.oomscore` and :mod:`memcgctl.logic.reportsnapshot` return these
and never build a sentence; the words are made in :mod:`memcgctl.render.reportwords`.
Pure data.
"""

from __future__ import annotations

from enum import Enum

from memcgctl.vocab.structs import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class KillVerdict(str, Enum):
    """Is the kernel's victim the top of the rebuilt ranking (a ``str``: the JSON
    value)."""

    MATCHES = "matches"
    DIFFERS = "differs"
    NO_TABLE = "no_table"
    INCOMPLETE = "incomplete"
    EXITING = "exiting"
    NO_VICTIM = "no_victim"


class Said(Enum):
    """One finding about a report; its values are named in the comment."""

    # totalpages (oomscore.totalpages)
    NO_MEMORY_LINE = "no_memory_line"  # (memcg OOM without its usage/limit line)
    SWAP_COUNTED_IN_FULL = "swap_counted_in_full"
    SWAP_UNLIMITED_UNKNOWN = "swap_unlimited_unknown"
    MEMCG_TOTALPAGES = "memcg_totalpages"  # limit_kb, with_swap, pages
    NO_RAM_LINE = "no_ram_line"
    HOST_TOTALPAGES = "host_totalpages"  # ram, reserved, swap, pages
    NO_SWAP_LINE = "no_swap_line"
    TOTAL_DOES_NOT_MATTER = "total_does_not_matter"
    # the printed score as a witness (postmortem)
    SCORE_WITHOUT_BONUS = "score_without_bonus"  # printed, pid
    SCORE_WITH_BONUS = "score_with_bonus"  # printed, pid
    TOTAL_FROM_SCORE = "total_from_score"  # printed, pid, swap_missing, least, most, floor
    BONUS_GUESSED = "bonus_guessed"  # assumed
    COLUMNS_INFERRED = "columns_inferred"  # columns
    RULES = "rules"  # version, from_release, source, root_bonus, clamp_to_one, ties_to_last
    CANDIDATES = "candidates"  # scored, skipped
    SCORE_AGREES = "score_agrees"  # printed
    SCORE_DIFFERS = "score_differs"  # printed, rebuilt
    # why the verdict
    EXITING = "exiting"  # pid, comm
    NO_KILLABLE = "no_killable"
    TABLE_CUT = "table_cut"
    NO_TABLE = "no_table"
    NO_TOTALPAGES = "no_totalpages"
    NOT_IN_TABLE = "not_in_table"  # pid
    THREAD_OF = "thread_of"  # kernel_pid, comm, pid
    ROWS_ONLY = "rows_only"  # rows
    TOP = "top"  # pid, comm, points
    NOT_TOP = "not_top"  # pid, gap (None: unknown), top_pid, top_comm
    SACRIFICE = "sacrifice"  # pid, comm, child
    OOM_GROUP = "oom_group"  # group, kills
    # the counterfactual's snapshot (reportsnapshot)
    VICTIM_MEMCG_ONLY = "victim_memcg_only"  # root
    GONE = "gone"  # tasks: (pid, comm) of the processes gone since the OOM


@dataclass(frozen=True)
class ReportNote:
    """A finding: its code and the values its words need."""

    said: Said
    values: dict[str, Any] = field(default_factory=dict, hash=False)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def note(said: Said, **values: Any) -> ReportNote:
    return ReportNote(said, values)


class LogGap(Enum):
    """What a saved log left unsaid about one kill: the ``notes`` of a kill event, each
    a string ``CODE`` or ``CODE:VALUE`` (:func:`gap_code`; an event is also a journal
    record and a JSON document), worded by :mod:`memcgctl.render.eventline`."""

    NO_KILL_LINE = "no_kill_line"  # value: summary | kill_select (the line that names it)
    CHOSE_OTHER = "chose_other"  # value: the pid the kernel chose (another was killed)
    SUMMARY_CUT = "summary_cut"  # value: where the summary is cut
    NO_CONSTRAINT = "no_constraint"
    NO_HEADER = "no_header"  # no "invoked oom-killer" line before the kill
    KILL_LINE_CUT = "kill_line_cut"


def gap_code(gap: LogGap, value: object = None) -> str:
    return gap.value if value is None else f"{gap.value}:{value}"


def parse_gap(code: str) -> tuple[LogGap | None, str]:
    """(the gap, its value) of a note; None for a note this version does not know."""
    name, _, value = code.partition(":")
    try:
        return LogGap(name), value
    except ValueError:
        return None, code
