"""Thread counts from the machine (training/threads.py): the CPUs a process may use, the load
of the others, --threads / VAELAB_THREADS, and a governor that gives a core back while another
process keeps it busy."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from vaelab.cli import main
from vaelab.errors import VaelabError
from vaelab.training import threads as T


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "cpus,others,expected",
    [(2, None, 2), (2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 3.0, 1), (8, 2.2, 6)],
)
def test_threads_are_the_cpus_the_others_leave(cpus, others, expected):
    assert T.threads_for(cpus, others) == expected


def test_cgroup_quota_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert T.cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert T.cgroup_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert T.cgroup_quota(tmp_path) == 2.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert T.cgroup_quota(tmp_path) is None


def test_allowed_cpus_take_the_affinity_mask_and_the_quota(monkeypatch):
    monkeypatch.setattr(T.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(T, "cgroup_quota", lambda: None)
    assert T.allowed_cpus() == 4
    monkeypatch.setattr(T, "cgroup_quota", lambda: 1.5)
    assert T.allowed_cpus() == 2


def test_requested_threads_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.delenv(T.ENV, raising=False)
    assert T.requested_threads(None) is None
    assert T.requested_threads(3) == 3
    monkeypatch.setenv(T.ENV, "2")
    assert T.requested_threads(None) == 2 and T.requested_threads(1) == 1
    for flag, env, source in [(0, "2", "--threads"), (None, "many", T.ENV), (None, "0", T.ENV)]:
        monkeypatch.setenv(T.ENV, env)
        with pytest.raises(VaelabError, match=f"{source} is .*: expected a number of threads"):
            T.requested_threads(flag)


def test_busy_seconds_read_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 50 1000 20 0 10 0 0 0\ncpu0 1 2 3 4\n")
    assert T.busy_seconds(stat) == pytest.approx(160 / T.os.sysconf("SC_CLK_TCK"))
    assert T.busy_seconds(tmp_path / "missing") is None


def test_the_meter_counts_the_others_not_this_process(monkeypatch):
    clock, busy, own = iter([0.0, 2.0]), iter([10.0, 13.0]), iter([5.0, 6.0])
    monkeypatch.setattr(T.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(T, "busy_seconds", lambda: next(busy))
    monkeypatch.setattr(T, "own_seconds", lambda: next(own))
    # 3 CPU-seconds busy in 2 s, 1 of them this process's: the others kept 1 core busy.
    assert T.LoadMeter().others() == pytest.approx(1.0)


def test_the_governor_follows_the_load_between_checks(monkeypatch):
    loads = iter([0.0, 1.2, 1.2, 0.1])
    monkeypatch.setattr(T.LoadMeter, "others", lambda self: next(loads))
    now = [0.0]
    monkeypatch.setattr(T.time, "monotonic", lambda: now[0])
    governor = T.ThreadGovernor(cpus=2)
    assert governor.start(settle=0) == 2 and torch.get_num_threads() == 2
    now[0] = T.CHECK_SECONDS + 0.1
    governor.step()  # another process took a core
    assert torch.get_num_threads() == 1
    governor.step()  # too soon to look again
    now[0] = 2 * T.CHECK_SECONDS + 0.2
    governor.step()
    assert torch.get_num_threads() == 1
    now[0] = 3 * T.CHECK_SECONDS + 0.3
    governor.step()  # it went away
    assert torch.get_num_threads() == 2
    assert [t for _, t in governor.history] == [1, 2]


def test_a_requested_count_is_kept_whatever_the_load(monkeypatch):
    monkeypatch.setattr(T.LoadMeter, "others", lambda self: 5.0)
    governor = T.ThreadGovernor(requested=2, cpus=2)
    assert governor.start() == 2
    monkeypatch.setattr(T.time, "monotonic", lambda: 1e9)
    governor.step()
    assert torch.get_num_threads() == 2


@pytest.mark.skipif(T.allowed_cpus() < 2, reason="needs 2 CPUs")
def test_a_busy_neighbour_leaves_the_governor_one_core_fewer():
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 20\n"
                                "while time.time() < end: pass"])  # fmt: skip
    try:
        chosen = T.ThreadGovernor(cpus=T.allowed_cpus()).start(settle=1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert chosen <= T.allowed_cpus() - 1


def test_bad_threads_flag_is_one_clear_error(capsys, tmp_path):
    argv = ["train", "vae", "--threads", "0", "--out", str(tmp_path / "r"), "--max-steps", "1"]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "vaelab: error: --threads is 0: expected a number of threads >= 1"
