"""``events --follow`` tails the journal too: a real ``memcgctl daemon`` handles an OOM
in our test parent and the follower prints the daemon's kill live, and a kill-all's, each
event once and in time order (v1)."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from memcgctl.cli import cli
from tests.realkernel import TestCgroups
from tests.test_daemon_kernel import Daemon, daemons, grower, jobs, set_xattr, wait_dead
from tests.test_events_kernel import Follow, follow

__all__ = ["daemons", "follow", "jobs"]


def test_follow_shows_daemon_and_kill_all_kills_live_once_in_order(
    cgroups: TestCgroups,
    jobs: dict[str, str],
    tmp_path: Path,
    daemons: list[Daemon],
    follow: Callable[[str], Follow],
) -> None:
    state = tmp_path / "state"
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "0")
    d = Daemon(state, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    f = follow(cgroups.parent)
    g = grower(cgroups, jobs["low"])
    assert wait_dead(g) == -signal.SIGKILL
    kill = f.wait_for(lambda e: e["kind"] == "user_kill" and e.get("pid") == g.pid)
    assert kill["source"] == "journal" and kill["by"] == "daemon"
    f.wait_for(lambda e: e["kind"] == "oom_resolved" and e["cgroup"] == jobs["top"])

    # a kill-all of a healthy sibling: a manual_kill, printed live as well
    spare = cgroups.make("spare", limit=16 << 20)
    calm = cgroups.sleeper(spare)
    env = {"MEMCGCTL_STATE_DIR": str(state), "MEMCGCTL_CGROUP_ROOT": str(cgroups.mount)}
    r = CliRunner().invoke(cli, ["kill-all", spare], env=env)
    assert r.exit_code == 0, r.output
    manual = f.wait_for(lambda e: e["kind"] == "manual_kill" and e.get("pid") == calm.pid)
    assert manual["by"] == "kill-all"
    assert d.stop() == 0
    err = f.stop()
    assert "Traceback" not in err

    events = f.events
    # each event once: one under_oom / oom_resolved pair per memcg, one record per kill
    pairs = Counter((e["kind"], e["cgroup"]) for e in events)
    for key, n in pairs.items():
        if key[0] in ("under_oom", "oom_resolved"):
            assert n == 1, (key, events)
    assert [e["kind"] for e in events].count("user_kill") == 1
    assert not [e for e in events if e["source"] == "journal" and e["kind"] == "under_oom"]
    # in time order
    times = [e["time"] for e in events]
    assert times == sorted(times), events
