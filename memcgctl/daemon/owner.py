"""Which daemon owns which knob: instance ids, marks, claims, release.

Every daemon has an *instance id* ``BOOT_ID/PID/STARTTIME`` — alive exactly as long as
that process is, never inherited by a recycled pid or a later boot.

* **Marks.** Before the daemon changes a knob on a memcg (v1 ``oom_kill_disable``, v2
  ``memory.high`` and ``cgroup.freeze``) it writes the xattr ``trusted.memcgctl.daemon``:
  a JSON object with its instance id and the value it found for each knob it changed
  (``{"instance": …, "memory.high": "max", "valve": "241172480"}``; ``valve_low``: the
  valve's lower step, the other value the daemon may have written).  Release restores
  exactly those values and removes the mark.  A knob the user changed meanwhile (its
  value is no longer the one the daemon wrote) is left as the user set it.
  On v2 the daemon also sets ``user.oomd_omit=1`` on systemd-oomd's candidates inside
  a valve's domain (daemon/oomd.py), recorded the same way (``"user.oomd_omit": ""``:
  there was none).
* **Claims.** A daemon claims its ``--root`` with the xattr
  ``trusted.memcgctl.daemon_root`` (its instance id).  A second daemon whose root
  overlaps (the same cgroup, an ancestor or a descendant) with a live claim refuses to
  start; a claim of a dead instance is stale and taken over.
* **Release** (``daemon --release``, the guardian, ExecStopPost) restores only the marks
  of instances that are no longer running, or those of one named instance.

The pre-1.x mark ``trusted.memcgctl.daemon_prev`` (the previous ``oom_kill_disable``
alone, no instance) is still understood and counts as a dead instance's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from memcgctl.daemon.oomd import OMIT
from memcgctl.kernel.cgroupfiles import V1_OOM_CONTROL, V2_FREEZE, V2_HIGH
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.procfs import ProcFs
from memcgctl.render.diag import warning
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import MemcgctlError, Vanished

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MARK = "trusted.memcgctl.daemon"
LEGACY_MARK = "trusted.memcgctl.daemon_prev"
CLAIM = "trusted.memcgctl.daemon_root"
_MAX_MARK = 4096
KNOBS = ("oom_kill_disable", "memory.high", "cgroup.freeze", OMIT)


def instance_id(proc: ProcFs, pid: int) -> str:
    return f"{proc.boot_id()}/{pid}/{proc.start_time(pid)}"


def instance_alive(proc: ProcFs, instance: str) -> bool:
    try:
        boot, pid, start = instance.split("/")
        if boot != proc.boot_id():
            return False
        return proc.start_time(int(pid)) == int(start)
    except (ValueError, Vanished, OSError):
        return False


def instance_pid(instance: str) -> int | None:
    try:
        return int(instance.split("/")[1])
    except (IndexError, ValueError):
        return None


def read_mark(fs: CgroupFs, cg: CgroupPath) -> dict[str, Any] | None:
    """Our mark on cg, or None.  A legacy or unreadable mark is returned as a dead
    instance's ("instance": "") so that release still restores what it can."""
    raw = fs.get_xattr(cg, MARK)
    if raw is not None:
        try:
            doc = json.loads(raw[:_MAX_MARK].decode("utf-8", "replace"))
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            doc.setdefault("instance", "")
            return {k: v for k, v in doc.items() if isinstance(v, str | int)}
        return {"instance": ""}
    legacy = fs.get_xattr(cg, LEGACY_MARK)
    if legacy is not None:
        return {"instance": "", "oom_kill_disable": 1 if legacy.strip() == b"1" else 0}
    return None


def write_mark(fs: CgroupFs, cg: CgroupPath, mark: dict[str, Any]) -> None:
    fs.set_xattr(cg, MARK, json.dumps(mark, sort_keys=True).encode())


def valve_values(mark: dict[str, Any]) -> tuple[str, ...]:
    """The memory.high values a mark says the daemon may have written: the valve, and
    its lower step (``valve_low``, delay 0: daemon/valve.py)."""
    return tuple(str(mark[k]) for k in ("valve", "valve_low") if k in mark)


def restore(fs: CgroupFs, cg: CgroupPath, mark: dict[str, Any]) -> list[str]:
    """Put back every knob the mark recorded, then remove the mark; what was restored,
    as ``knob=value`` strings.  A knob whose current value is not the one the daemon
    wrote was changed by the user since: it stays as it is."""
    done: list[str] = []
    if "cgroup.freeze" in mark:
        prev = "1" if str(mark["cgroup.freeze"]) == "1" else "0"
        fs.write(cg, V2_FREEZE, prev)
        done.append(f"cgroup.freeze={prev}")
    if "memory.high" in mark and "valve" in mark:  # no "valve": we never wrote it
        current = (fs.read(cg, V2_HIGH) or "").strip()
        if current in valve_values(mark):
            prev = str(mark["memory.high"])
            fs.write(cg, V2_HIGH, prev)
            done.append(f"memory.high={prev}")
    if "oom_kill_disable" in mark:
        prev = "1" if str(mark["oom_kill_disable"]) == "1" else "0"
        # writing 0 also wakes the tasks sleeping in the OOM: the kernel decides again
        fs.write(cg, V1_OOM_CONTROL, prev)
        done.append(f"oom_kill_disable={prev}")
    # systemd-oomd kept out of a valve's domain (daemon/oomd.py); removed meanwhile
    # (systemd re-applying a unit's ManagedOOMPreference=): nothing to put back
    if OMIT in mark and fs.get_xattr(cg, OMIT) == b"1":
        prev = str(mark[OMIT])
        if prev:
            fs.set_xattr(cg, OMIT, prev.encode())
        else:
            fs.remove_xattr(cg, OMIT)
        done.append(f"{OMIT}={prev or '(none)'}")
    fs.remove_xattr(cg, MARK)
    fs.remove_xattr(cg, LEGACY_MARK)
    return done


# cgroups walked between two pulses of a walk for marks (the daemon's start: its loop
# serves notifications and beats at each, issue 22: 5,000 cgroups took 3.3 s in the
# emulated guest, a hang to the guardian and an OOM unserved meanwhile)
PULSE_EVERY = 16


def marked(
    fs: CgroupFs, root: CgroupPath, pulse: Callable[[], None] | None = None
) -> Iterator[tuple[CgroupPath, dict[str, Any]]]:
    for n, cg in enumerate(fs.walk(root)):
        if pulse is not None and n % PULSE_EVERY == PULSE_EVERY - 1:
            pulse()
        try:
            mark = read_mark(fs, cg)
        except Vanished:
            continue
        if mark is not None:
            yield cg, mark


def releasable(
    fs: CgroupFs,
    proc: ProcFs,
    root: CgroupPath,
    instance: str | None = None,
    pulse: Callable[[], None] | None = None,
) -> list[tuple[CgroupPath, dict[str, Any]]]:
    """Marks below root to release: those of ``instance``, or (None) of every instance
    that is no longer running.  ``pulse``: called now and then during the walk."""
    out = []
    for cg, mark in marked(fs, root, pulse):
        owner = str(mark.get("instance", ""))
        if instance is not None:
            if owner == instance:
                out.append((cg, mark))
        elif not owner or not instance_alive(proc, owner):
            out.append((cg, mark))
    return out


def release(
    fs: CgroupFs, proc: ProcFs, root: CgroupPath, instance: str | None = None, dry_run: bool = False
) -> list[tuple[CgroupPath, list[str]]]:
    """Release the marks :func:`releasable` names (and a dead instance's claim on
    root); what was (or, dry run, would be) restored per cgroup."""
    out: list[tuple[CgroupPath, list[str]]] = []
    for cg, mark in releasable(fs, proc, root, instance):
        if dry_run:
            knobs: list[str] = [k for k in KNOBS if k in mark]
            out.append((cg, knobs))
            continue
        try:
            out.append((cg, restore(fs, cg, mark)))
        except Vanished:
            continue
        except MemcgctlError as exc:  # the knob stays as the dead daemon set it: say so
            warning(f"{cg}: cannot restore what a daemon changed ({exc})")
            continue
    if not dry_run:
        for cg in fs.walk(root):
            try:
                owner = claim_of(fs, cg)
                if owner is not None and (
                    owner == instance or (instance is None and not instance_alive(proc, owner))
                ):
                    fs.remove_xattr(cg, CLAIM)
            except Vanished:
                continue
            except MemcgctlError as exc:  # a stale claim stays: the next daemon removes it
                warning(f"{cg}: cannot remove a daemon's claim ({exc})")
    return out


def claim_of(fs: CgroupFs, cg: CgroupPath) -> str | None:
    raw = fs.get_xattr(cg, CLAIM)
    return raw[:256].decode("ascii", "replace") if raw is not None else None


def running_overlap(fs: CgroupFs, proc: ProcFs, root: CgroupPath) -> tuple[CgroupPath, str] | None:
    """(cgroup, instance) of a live daemon whose root overlaps ``root``, or None."""
    for cg in [*reversed(root.ancestors()), *fs.walk(root)]:
        try:
            owner = claim_of(fs, cg)
        except Vanished:
            continue
        if owner is not None and instance_alive(proc, owner):
            return cg, owner
    return None


def claim(fs: CgroupFs, cg: CgroupPath, instance: str) -> None:
    fs.set_xattr(cg, CLAIM, instance.encode())


def claim_once(fs: CgroupFs, proc: ProcFs, cg: CgroupPath, instance: str) -> str | None:
    """Claim cg with XATTR_CREATE, so that of two daemons racing for the same root the
    kernel lets exactly one write it (the other may use another state directory, where
    the flocks of ``state/daemonlock.py`` do not reach).  None when claimed, else the
    live instance holding it.  A dead instance's claim is removed and the claim retried."""
    holder: str | None = None
    for _ in range(3):
        if fs.create_xattr(cg, CLAIM, instance.encode()):
            return None
        holder = claim_of(fs, cg)
        if holder is None or holder == instance:
            if holder == instance:
                return None
            continue  # removed meanwhile: try again
        if instance_alive(proc, holder):
            return holder
        fs.remove_xattr(cg, CLAIM)  # stale: its daemon is gone
    return holder


def unclaim(fs: CgroupFs, cg: CgroupPath, instance: str) -> None:
    try:
        if claim_of(fs, cg) == instance:
            fs.remove_xattr(cg, CLAIM)
    except Vanished:
        pass
    except MemcgctlError as exc:  # a stale claim stays: the next daemon removes it
        warning(f"{cg}: cannot remove our claim ({exc})")
