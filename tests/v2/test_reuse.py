"""The hierarchy-agnostic real-kernel tests of the v1 suite, run again on cgroup v2.

Imported, not copied: pytest collects them here as well, and the ``cgroups`` fixture
is on the cgroup2 memory hierarchy inside the guest.
"""

from __future__ import annotations

from tests.test_foundation_kernel import (
    delegated,
    test_badness_and_delay_live_in_real_xattrs,
    test_delegated_user_ranks_inside_but_not_its_root,
    test_process_registry_on_real_processes,
    test_raised_oom_score_adj_is_read_and_keeps_default_badness,
    test_tree_and_ps_show_real_usage_and_pids,
    test_unprivileged_write_on_root_owned_cgroup_is_exit_4,
)
from tests.test_killall_kernel import (
    test_big_victim_is_reaped_with_process_mrelease_path,
    test_timeout_names_the_survivor,
    test_v2_kill_and_freeze_paths_with_fork_loop,
    test_v2_term_with_grace_escalates,
)
from tests.test_predict_kernel import (
    test_host_ranking_matches_kernel_oom_score,
    test_set_badness_and_priority_prediction_agree,
)
from tests.test_smoke_kernel import test_tree_and_ps_see_real_memcg

__all__ = [
    "delegated",
    "test_badness_and_delay_live_in_real_xattrs",
    "test_big_victim_is_reaped_with_process_mrelease_path",
    "test_delegated_user_ranks_inside_but_not_its_root",
    "test_host_ranking_matches_kernel_oom_score",
    "test_process_registry_on_real_processes",
    "test_raised_oom_score_adj_is_read_and_keeps_default_badness",
    "test_set_badness_and_priority_prediction_agree",
    "test_timeout_names_the_survivor",
    "test_tree_and_ps_see_real_memcg",
    "test_tree_and_ps_show_real_usage_and_pids",
    "test_unprivileged_write_on_root_owned_cgroup_is_exit_4",
    "test_v2_kill_and_freeze_paths_with_fork_loop",
    "test_v2_term_with_grace_escalates",
]
