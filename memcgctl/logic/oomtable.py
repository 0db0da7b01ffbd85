"""The task table of an OOM report (``Tasks state``): its rows in every column layout
since 3.x, and the columns of a table whose header is not in the log (pure, no I/O)."""

from __future__ import annotations

from memcgctl.vocab.structs import dataclass


@dataclass(frozen=True)
class TaskRow:
    """One row of ``Tasks state``: sizes in pages (page tables in pages too, whatever
    the layout printed), in the kernel's scan order (``index``)."""

    index: int
    pid: int
    uid: int
    tgid: int
    total_vm: int
    rss: int
    rss_anon: int | None
    rss_file: int | None
    rss_shmem: int | None
    pgtable_pages: int
    swapents: int
    oom_score_adj: int
    name: str


KNOWN_COLUMNS = {
    "total_vm",
    "rss",
    "rss_anon",
    "rss_file",
    "rss_shmem",
    "pgtables_bytes",
    "nr_ptes",
    "nr_pmds",
    "swapents",
    "oom_score_adj",
    "cpu",
    "oom_adj",
}


def parse_task_row(
    columns: list[str], pid: int, rest: str, index: int, page_size: int = 4096
) -> TaskRow | None:
    """A table row given the header's columns after ``uid tgid`` (``total_vm rss …
    name``).  None if it does not fit the header."""
    n = len(columns) - 1  # numeric columns after uid, tgid; then the name
    parts = rest.split(None, n + 2)
    if len(parts) < n + 3 or columns[-1] != "name":
        return None
    try:
        uid, tgid = int(parts[0]), int(parts[1])
        values = {c: int(v) for c, v in zip(columns[:-1], parts[2 : n + 2], strict=True)}
    except ValueError:
        return None
    name = parts[n + 2]
    if "pgtables_bytes" in values:
        pt = values["pgtables_bytes"] // page_size
    else:
        pt = values.get("nr_ptes", 0) + values.get("nr_pmds", 0)
    return TaskRow(
        index=index,
        pid=pid,
        uid=uid,
        tgid=tgid,
        total_vm=values.get("total_vm", 0),
        rss=values.get("rss", 0),
        rss_anon=values.get("rss_anon"),
        rss_file=values.get("rss_file"),
        rss_shmem=values.get("rss_shmem"),
        pgtable_pages=pt,
        swapents=values.get("swapents", 0),
        oom_score_adj=values.get("oom_score_adj", 0),
        name=name,
    )


def infer_columns(rest: str) -> list[str] | None:
    """The columns after ``uid tgid`` of a task row whose header is not in the log, from
    how many numbers it has: 7 (3.x ``nr_ptes`` or 4.15+ ``pgtables_bytes``: a multiple
    of 4096 is bytes), 8 (4.x ``nr_ptes nr_pmds``), 10 (6.8+ ``rss_anon rss_file
    rss_shmem``).  None for any other shape."""
    parts = rest.split()
    n = 0
    for part in parts:
        if not part.lstrip("-").isdigit():
            break
        n += 1
    if n == len(parts) or parts[-1].endswith(("...", "\u2026")):
        return None  # no name, or the row is cut short
    if n == 7:
        pt = int(parts[4])
        col = "pgtables_bytes" if pt % 4096 == 0 and pt > 0 else "nr_ptes"
        return ["total_vm", "rss", col, "swapents", "oom_score_adj", "name"]
    if n == 8:
        return ["total_vm", "rss", "nr_ptes", "nr_pmds", "swapents", "oom_score_adj", "name"]
    if n == 10:
        return [
            "total_vm", "rss", "rss_anon", "rss_file", "rss_shmem", "pgtables_bytes",
            "swapents", "oom_score_adj", "name",
        ]  # fmt: skip
    return None
