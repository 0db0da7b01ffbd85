"""A tenant against the daemon's standing plan on cgroup v2, in the guest (issue 22): nobody,
owning a delegated subtree inside a managed delay-0 memcg, makes 2,000 empty cgroups ranked
first there (``user.memcgctl.badness`` 1).  No plan is kept (``STAMP_MAX_CGROUPS``): at
the valve's event the policy's victim is chosen afresh and dies, the kernel kills nobody,
nothing outside the tenant's subtree changes, and the daemon's loop stays alive."""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path

from memcgctl.daemon.choosing import PLAN_REFUSED_RETRY
from memcgctl.daemon.ports import STAMP_MAX_CGROUPS
from tests.realkernel import TestCgroups, journaled, readable_helpers, subdirs
from tests.test_daemon_kernel import Daemon, daemons, set_xattr
from tests.test_plan_tenant_kernel import (
    EMPTIES,
    contained_and_alive,
    refused_at,
    tenant_domain,
    xattrs,
)
from tests.v2.test_daemon_v2 import field, grow, no_kernel_kill
from tests.v2.test_delegation_v2 import as_nobody

__all__ = ["daemons"]
MIB = 1 << 20
JOBS, SOLO = 144 * MIB, 64 * MIB  # the second test's two domains
PY = 9  # MiB: what a grower's interpreter itself uses (the guest's python3)


def apart(refusals: list[tuple[float, str]]) -> None:
    """Each refusal after the first came a retry after the one before (the line is
    written after the choice: less what a choice takes under TCG, ~1 s)."""
    gaps = [round(b[0] - a[0], 1) for a, b in itertools.pairwise(refusals)]
    assert refusals and all(g >= PLAN_REFUSED_RETRY - 2 for g in gaps), (gaps, refusals)


def test_a_tenants_thousands_of_empty_cgroups_keep_no_plan_and_the_oom_is_still_ours(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    assert EMPTIES > STAMP_MAX_CGROUPS
    top, deleg, other = tenant_domain(cgroups, 256 * MIB, enable_memory=True)
    work = f"{deleg}/work"
    victim = as_nobody(cgroups, work, str(readable_helpers() / "hog.py"), "40")
    big = cgroups.hog(other, mib=80)  # root's, the biggest: the kernel's pick
    roots = [cgroups.path(top), cgroups.path(other), *subdirs(cgroups.path(other))]
    before = {p: xattrs(p) for p in roots}
    dm = Daemon(tmp_path, cgroups.parent)  # with its guardian, which would see a hang
    daemons.append(dm)
    dm.wait_for("daemon_took_over", top, timeout=60)
    # 1 MiB every 40 ms: seconds between one headroom below the valve (near: a plan
    # would be chosen ahead, tests/v2/test_plan_v2.py) and the valve
    g = grow(cgroups, other, 0.04)
    _, kill = dm.wait_for("daemon_kill", top, timeout=120)
    killed_at = time.time()
    assert field(kill, "pid") == str(victim.pid) and f" victim_cgroup={work} " in kill, kill
    assert " plan_age_ms=" not in kill, kill  # chosen afresh: no plan was kept
    assert victim.wait(timeout=30) == -signal.SIGKILL
    g.kill()  # ours: the episode ends
    g.wait(timeout=30)
    assert big.poll() is None
    no_kernel_kill(cgroups, top)
    assert journaled(tmp_path, "user_kill", victim.pid)["by"] == "daemon"
    contained_and_alive(cgroups, cgroups.path(deleg), dm, tmp_path, killed_at, roots, before)
    assert (cgroups.path(top) / "memory.high").read_text().strip() == "max"


def test_a_tenants_empty_cgroups_do_not_hold_another_memcgs_oom_back(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """v2 in the guest: nobody's 2,000 empty cgroups ranked first in a delay-0 domain
    that stays near its valve (between the lower step and the valve) for seconds: its
    plan is refused once and not chosen again while its tree is unchanged.  Meanwhile
    root's own managed memcg outside that subtree reaches its valve: its policy victim
    dies, the kernel kills nothing.  Then the tenant's domain reaches its valve too:
    its victim is chosen at the event (past the empty cgroups by their probe) and
    dies."""
    # both domains fit in the test parent's own 256 MiB (its OOM would kill in both)
    solo = cgroups.make("solo", limit=SOLO)  # root's, outside nobody's subtree
    low = cgroups.make("solo/low", limit=None)
    hi = cgroups.make("solo/high", limit=None)
    set_xattr(cgroups, low, "badness", "10")
    set_xattr(cgroups, hi, "badness", "900")
    set_xattr(cgroups, solo, "oom_delay_ms", "0")
    top, deleg, other = tenant_domain(cgroups, JOBS, enable_memory=True)
    work = f"{deleg}/work"
    victim = as_nobody(cgroups, work, str(readable_helpers() / "hog.py"), "40")
    solo_victim = cgroups.hog(low, mib=8)  # the policy's in solo
    roots = [cgroups.path(cg) for cg in (top, other, solo, low, hi)]
    before = {p: xattrs(p) for p in roots}
    dm = Daemon(tmp_path, cgroups.parent)  # with its guardian; debug lines on stderr
    daemons.append(dm)
    dm.wait_for("daemon_took_over", top, timeout=60)
    dm.wait_for("daemon_took_over", solo, timeout=60)
    # jobs: between one headroom below its valve (near) and the valve, and stays there
    used = int((cgroups.path(top) / "memory.current").read_text())
    # (each grower's own interpreter counts too: about PY MiB)
    filler = grow(cgroups, other, 0.01, upto_mib=(int(JOBS * 0.85) - used >> 20) - PY)
    assert filler.stdout is not None
    assert filler.stdout.readline() == b"survived\n"
    dm.wait_for("plan_refused", top, timeout=120)
    time.sleep(5)  # near all along: a refresh was due every second
    apart(refused_at(dm, top))
    # root's memcg goes a few MiB past its valve (90 %) while jobs is near
    used = int((cgroups.path(solo) / "memory.current").read_text())
    grower = grow(cgroups, hi, 0.02, upto_mib=(int(SOLO * 0.9) - used >> 20) - PY + 3)
    assert solo_victim.wait(timeout=120) == -signal.SIGKILL
    _, kill = dm.wait_for("daemon_kill", solo, timeout=60)
    assert field(kill, "pid") == str(solo_victim.pid) and f" victim_cgroup={low} " in kill, kill
    grower.kill()  # ours: its episode ends
    grower.wait(timeout=30)
    no_kernel_kill(cgroups, solo)
    dm.wait_for("oom_resolved", solo, timeout=60)
    # the tenant's tree never changed: while root's memcg ran out, the tenant's domain
    # was not chosen over again before its retry (PLAN_REFUSED_RETRY; under TCG the
    # test outlasts it, where v1 sees one refusal)
    apart(refused_at(dm, top))
    # then the tenant's domain goes past its valve (90 %) by a few MiB and its grower's
    # interpreter, short of the limit: the choice at the event takes about a second under
    # TCG; the victim's death takes the domain back below the valve, where it stays
    used = int((cgroups.path(top) / "memory.current").read_text())
    g = grow(cgroups, other, 0.04, upto_mib=(int(JOBS * 0.9) - used >> 20) - PY + 4)
    _, kill = dm.wait_for("daemon_kill", top, timeout=120)
    killed_at = time.time()
    assert field(kill, "pid") == str(victim.pid) and f" victim_cgroup={work} " in kill, kill
    assert " plan_age_ms=" not in kill, kill
    assert victim.wait(timeout=30) == -signal.SIGKILL
    assert g.stdout is not None
    assert g.stdout.readline() == b"survived\n"
    g.kill()  # ours
    g.wait(timeout=30)
    filler.kill()
    filler.wait(timeout=30)
    no_kernel_kill(cgroups, top)
    contained_and_alive(cgroups, cgroups.path(deleg), dm, tmp_path, killed_at, roots, before)
