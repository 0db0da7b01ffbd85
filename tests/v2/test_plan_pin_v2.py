"""The standing plan's kill on cgroup v2, in the guest (issue 22): the tests of
tests/test_plan_pin_kernel.py and the kept cgroup files' of
tests/test_kept_files_kernel.py (imported: pytest collects them here too), and a victim
that died between the plan and the event with its pid given to a newcomer in the same
cgroup, which only the guest may arrange (``ns_last_pid`` of its own pid namespace).
The plan's check then still finds the pid in the cgroup; the signal goes through the
pidfd pinned with the plan, finds the victim gone, and the policy's victim of that
moment dies: the newcomer lives."""

from __future__ import annotations

import subprocess

from tests.realkernel import TestCgroups
from tests.test_kept_files_kernel import (
    test_a_kept_file_reads_the_value_now_and_never_a_removed_cgroups,
)
from tests.test_plan_pin_kernel import (
    Setup,
    kill_line,
    killed,
    planned,
    test_a_plan_that_holds_is_only_the_signal_at_the_event,
    test_a_victim_moved_out_since_the_plan_is_not_killed,
    test_a_victim_that_died_since_the_plan_is_passed_over,
    test_only_the_checked_decision_is_signalled_without_a_membership_read,
    test_the_pin_goes_with_the_plan,
    the_event,
)

__all__ = [
    "planned",
    "test_a_kept_file_reads_the_value_now_and_never_a_removed_cgroups",
    "test_a_plan_that_holds_is_only_the_signal_at_the_event",
    "test_a_victim_moved_out_since_the_plan_is_not_killed",
    "test_a_victim_that_died_since_the_plan_is_passed_over",
    "test_only_the_checked_decision_is_signalled_without_a_membership_read",
    "test_the_pin_goes_with_the_plan",
]


def sleeper_with_pid(cgroups: TestCgroups, cg: str, pid: int) -> subprocess.Popen[bytes]:
    """A sleeper in cg whose pid is ``pid`` (free): the next pid handed out is set
    (the guest's pid namespace is ours; a fork elsewhere in between: tried again)."""
    for _ in range(5):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        p = cgroups.sleeper(cg)
        if p.pid == pid:
            return p
        p.kill()
        p.wait(timeout=20)
    raise AssertionError(f"pid {pid} was not handed out again")


def test_a_victim_whose_pid_was_reused_since_the_plan_is_not_mistaken(planned: Setup) -> None:
    s = planned
    pid = s.big.pid
    s.big.kill()
    assert s.big.wait(timeout=20) < 0
    newcomer = sleeper_with_pid(s.cgroups, s.low, pid)  # in the victim's cgroup
    assert pid in s.cgroups.pids(s.low)
    the_event(s, 1.01)
    assert killed(s, s.small)
    line = kill_line(s)
    assert f" pid={s.small.pid} " in line and " plan_age_ms=" not in line, s.ports.text()
    assert newcomer.poll() is None and s.other.poll() is None
