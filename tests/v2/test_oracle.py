"""The predict-victim kernel oracle of tests/test_predict_kernel.py on cgroup v2 (the
guest's kernel 6.1): the same scenarios, with holders moved to leaf cgroups (v2 has no
processes in inner cgroups).  Fewer seeds: the guest is emulated (TCG) and slow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.realkernel import TestCgroups
from tests.test_predict_kernel import BASE_SEED, run_oracle

N_SCENARIOS = int(os.environ.get("MEMCGCTL_V2_ORACLE_SEEDS", "5"))
LEAF = {"oom": "oom/x", "oom/a": "oom/a/y"}


@pytest.mark.parametrize("index", range(N_SCENARIOS), ids=lambda i: f"seed{BASE_SEED}+{i}")
def test_v2_oracle_kernel_kills_the_predicted_process(
    cgroups: TestCgroups, runner: CliRunner, tmp_path: Path, index: int
) -> None:
    run_oracle(cgroups, runner, tmp_path, BASE_SEED + index, leaf=LEAF)
