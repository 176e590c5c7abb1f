"""Data-parallel training on the CPU: Gloo, two processes on 127.0.0.1 (tests/dist_worker.py)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dist_worker import no_noise, run_config
from vaelab.cli import main
from vaelab.data import load_dataset, write_idx
from vaelab.errors import VaelabError
from vaelab.models import MODELS
from vaelab.training import checkpoint
from vaelab.training.distributed import Ranks, Single
from vaelab.training.trainer import Trainer, train

WORKER = os.path.join(os.path.dirname(__file__), "dist_worker.py")
TIMEOUT = 20  # seconds: the process group's timeout in these tests
N_TRAIN = 249  # global batches of 64: 64, 64, 64, 57 (split 29 + 28: unequal shards)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int, restart: int = 0) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC_")}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
               RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
               OMP_NUM_THREADS="1", TORCHELASTIC_RESTART_COUNT=str(restart))  # fmt: skip
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def launch(tmp_path, spec: dict, argv=(), world: int = 2, restart: int = 0, tag: str = "run"):
    """Start `world` ranks of the worker; their output goes to tmp_path/TAG-rankR.log."""
    port, procs = free_port(), []
    cmd = [sys.executable, WORKER, json.dumps(spec), *argv]
    for rank in range(world):
        env = rank_env(rank, world, port, restart)
        with open(tmp_path / f"{tag}-rank{rank}.log", "w") as out:
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
    return procs


def finish(procs, tmp_path, tag: str = "run", timeout: float = 90) -> list[int]:
    """The ranks' exit codes; any rank still running after `timeout` seconds is killed."""
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, code in enumerate(codes):
        if code not in (0, 2):  # show what went wrong
            print((tmp_path / f"{tag}-rank{rank}.log").read_text())
    return codes


def log(tmp_path, tag: str, rank: int) -> str:
    return (tmp_path / f"{tag}-rank{rank}.log").read_text()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, mnist_sample):
    """idx:FOLDER with 249 training and 64 test digits, and the data loaded from it."""
    folder = tmp_path_factory.mktemp("idx")
    d = mnist_sample
    for name, array in [
        ("train-images-idx3-ubyte", d.train_images[:N_TRAIN, 0]),
        ("train-labels-idx1-ubyte", d.train_labels[:N_TRAIN]),
        ("t10k-images-idx3-ubyte", d.test_images[:64, 0]),
        ("t10k-labels-idx1-ubyte", d.test_labels[:64]),
    ]:
        write_idx(folder / name, array.numpy().astype(np.uint8))
    spec = f"idx:{folder}"
    return spec, load_dataset(spec)


def cli_args(dataset_spec: str, out, *extra: str) -> list[str]:
    return ["train", "vae", "--dataset", dataset_spec, "--hidden", "32", "--latent-dim", "2",
            "--epochs", "2", "--batch-size", "64", "--out", str(out), "--quiet",
            "--dist-timeout", str(TIMEOUT), *extra]  # fmt: skip


def metrics(run_dir) -> list[dict]:
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [
        {k: v for k, v in r.items() if k not in ("train/samples_per_s", "train/threads")}
        for r in rows
    ]


def assert_same_weights(a, b):
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


# -- two ranks against one process ---------------------------------------------------------------
def test_two_ranks_match_one_process_for_every_model(dataset, tmp_path, monkeypatch):
    """Global batch 64 on two ranks (32 each; 29 + 28 in the last batch) = batch 64 in one
    process on the same sample order, for every model and each of the AAE's three phases; and
    batch 62, whose last batch (1 image) leaves rank 1 a stand-in of weight 0."""
    spec_name, data = dataset
    runs = [{"model": m, "batch_size": 64, "name": m} for m in sorted(MODELS)]
    runs.append({"model": "aae", "batch_size": 62, "name": "aae-62"})
    for run in runs:
        run["out"] = str(tmp_path / "two" / run["name"])
    spec = {"no_noise": True, "data": spec_name, "dump": str(tmp_path), "runs": runs,
            "timeout": TIMEOUT}  # fmt: skip
    assert finish(launch(tmp_path, spec), tmp_path) == [0, 0]
    no_noise(monkeypatch.setattr)
    for run in runs:
        m = run["name"]
        config = run_config(run["model"], spec_name, data, batch_size=run["batch_size"])
        train(config, tmp_path / "one" / m, quiet=True, data=data)
        one = load_file(tmp_path / "one" / m / checkpoint.MODEL_FILE)
        two = load_file(tmp_path / "two" / m / checkpoint.MODEL_FILE)
        rank1 = load_file(tmp_path / f"rank1-{m}.safetensors")
        for key in one:
            assert torch.equal(rank1[key], two[key]), f"{m} {key}: the ranks drifted apart"
        if MODELS[run["model"]].batch_statistic_loss:
            continue  # its loss over two shards is not its loss over the global batch
        for key in one:
            torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=f"{m} {key}")
        for row_one, row_two in zip(
            metrics(tmp_path / "one" / m), metrics(tmp_path / "two" / m), strict=True
        ):
            assert row_one.keys() == row_two.keys()
            for key, value in row_one.items():
                assert row_two[key] == pytest.approx(value, rel=1e-4), f"{m} {key}"


# -- rank-0-only writes, a dead rank, a hung rank, restarts --------------------------------------
@pytest.fixture(scope="module")
def reference_run(dataset, tmp_path_factory):
    """An uninterrupted two-rank `vaelab train vae` (dynamic binarization, with report), with
    rank 1's writes under the run folder audited."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "run"
    procs = launch(tmp, {"audit": str(out)}, cli_args(dataset[0], out))
    return out, finish(procs, tmp), log(tmp, "run", 1)


def test_only_rank_zero_writes(reference_run):
    out, codes, rank1_log = reference_run
    assert codes == [0, 0], rank1_log  # rank 1 exits 3 if it wrote under the run folder
    for name in ("config.json", "model.safetensors", "manifest.json", "metrics.jsonl",
                 "report.html", "figures"):  # fmt: skip
        assert (out / name).exists(), name
    assert len(list((out / "events").iterdir())) == 1  # one event file: rank 0's
    assert [r["epoch"] for r in metrics(out)] == [1, 2]
    assert metrics(out)[1]["step"] == 8  # 249 images in global batches of 64: 4 steps an epoch
    state = load_file(out / checkpoint.STATE_FILE)
    assert {"rng.torch", "rng.binarize", "rng.rank1.torch", "rng.rank1.binarize"} <= set(state)
    assert not torch.equal(state["rng.torch"], state["rng.rank1.torch"])  # noise of its own


def test_a_killed_rank_stops_the_other_then_a_restart_finishes(dataset, reference_run, tmp_path):
    ref, codes, _ = reference_run
    assert codes == [0, 0]
    out = tmp_path / "run"
    argv = cli_args(dataset[0], out, "--no-report")
    spec = {"die_at": [1, 6, int(signal.SIGKILL)]}  # mid-way through epoch 2
    start = time.monotonic()
    procs = launch(tmp_path, spec, argv, tag="first")
    assert finish(procs, tmp_path, "first", timeout=TIMEOUT + 30) == [2, -signal.SIGKILL]
    assert time.monotonic() - start < TIMEOUT + 30
    message = log(tmp_path, "first", 0).strip().splitlines()[-1]
    assert message.startswith("vaelab: error: rank 0 of 2 stopped while averaging gradients")
    assert "Traceback" not in log(tmp_path, "first", 0)
    assert [r["epoch"] for r in metrics(out)] == [1]  # the last complete checkpoint: epoch 1
    # torchrun's restart: the same command line again, TORCHELASTIC_RESTART_COUNT=1.
    procs = launch(tmp_path, spec, argv, restart=1, tag="again")
    assert finish(procs, tmp_path, "again") == [0, 0]
    assert metrics(out) == metrics(ref)  # as if it had never stopped, bit for bit
    assert_same_weights(out / checkpoint.MODEL_FILE, ref / checkpoint.MODEL_FILE)


def test_early_stopping_on_rank_zero_stops_every_rank(dataset, tmp_path):
    # A learning rate too small to move the weights: the validation loss (the same noise every
    # epoch) never improves after epoch 1, so patience 1 stops after epoch 2. Only rank 0 has
    # that loss; the other rank must stop with it rather than wait in the next all-reduce.
    out = tmp_path / "run"
    argv = cli_args(dataset[0], out, "--no-report", "--epochs", "5", "--lr", "1e-30",
                    "--validation", "64", "--early-stopping", "1")  # fmt: skip
    assert finish(launch(tmp_path, {}, argv), tmp_path, timeout=TIMEOUT + 30) == [0, 0]
    assert [r["epoch"] for r in metrics(out)] == [1, 2]
    state = json.loads((out / "train_state.json").read_text())
    assert state["stopped"].startswith("early stopping: no better validation loss in 1 epochs")


@pytest.mark.slow
def test_a_silent_rank_makes_the_other_stop_at_the_timeout(dataset, tmp_path):
    out = tmp_path / "run"
    argv = cli_args(dataset[0], out, "--no-report", "--epochs", "1", "--dist-timeout", "3")
    procs = launch(tmp_path, {"die_at": [1, 2, int(signal.SIGSTOP)]}, argv)
    try:
        assert procs[0].wait(timeout=60) == 2
    finally:
        procs[1].kill()
        procs[1].wait()
    last = log(tmp_path, "run", 0).strip().splitlines()[-1]
    assert "rank 0 of 2 stopped while averaging gradients" in last
    assert "did not answer within 3 s" in last


@pytest.mark.slow
def test_torchrun_max_restarts_resumes_after_a_worker_dies(dataset, reference_run, tmp_path):
    ref, codes, _ = reference_run
    assert codes == [0, 0]
    out = tmp_path / "run"
    spec = {"die_at": [1, 6, int(signal.SIGKILL)]}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "--max-restarts", "1", "--monitor-interval", "0.1", WORKER, json.dumps(spec),
           *cli_args(dataset[0], out, "--no-report")]  # fmt: skip
    env = rank_env(0, 1, 0)
    for name in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK",
                 "LOCAL_WORLD_SIZE", "TORCHELASTIC_RESTART_COUNT"):  # fmt: skip
        env.pop(name)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert metrics(out) == metrics(ref)
    assert_same_weights(out / checkpoint.MODEL_FILE, ref / checkpoint.MODEL_FILE)


# -- the pieces, in one process ------------------------------------------------------------------
def test_shards_cover_the_batch_once():
    idx = torch.randperm(11)
    parts = [Ranks(r, 4, r, 1.0, owns_group=False).shard(idx) for r in range(4)]
    assert torch.equal(torch.cat([p for p, _ in parts]), idx)
    assert [len(p) for p, _ in parts] == [3, 3, 3, 2]
    assert sum(share for _, share in parts) == pytest.approx(1.0)
    # Fewer images than ranks: the empty ranks compute on a stand-in with weight 0.
    stand_in, share = Ranks(3, 4, 3, 1.0, owns_group=False).shard(idx[:2])
    assert len(stand_in) == 1 and share == 0.0
    assert Single().shard(idx) == (idx, 1.0)


def test_each_rank_takes_its_own_rng_states():
    rng = {"torch": torch.zeros(3), "binarize": torch.ones(3), "rank1.torch": torch.full((3,), 2.0)}
    assert Ranks(0, 2, 0, 1.0, owns_group=False).own_rng(rng).keys() == {"torch", "binarize"}
    assert Ranks(1, 2, 1, 1.0, owns_group=False).own_rng(rng) == {"torch": rng["rank1.torch"]}
    assert Ranks(2, 3, 2, 1.0, owns_group=False).own_rng(rng) is None  # the run had 2 ranks


def test_a_global_batch_smaller_than_the_ranks_is_refused(small_data, tmp_path):
    config = run_config("vae", "mnist-sample", small_data)
    config.train.batch_size = 3
    model = MODELS["vae"](config.model_config)
    with pytest.raises(VaelabError, match="at least one image for each of the 4 ranks"):
        Trainer(tmp_path, config, small_data, model, dist=Ranks(0, 4, 0, 1.0, owns_group=False))


def test_an_elastic_restart_resumes_or_starts_again(tmp_path, monkeypatch):
    args = ["train", "vae", "--hidden", "32", "--latent-dim", "2", "--epochs", "1",
            "--out", str(tmp_path / "run"), "--quiet", "--no-report"]  # fmt: skip
    assert main([*args, "--max-steps", "2"]) == 0
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # a restart resumes from the checkpoint
    assert main(args) == 0
    assert json.loads((tmp_path / "run" / "train_state.json").read_text())["epoch"] == 1
    (tmp_path / "run" / checkpoint.MANIFEST).unlink()  # as if it died before its first one
    assert main(args) == 0  # starts the run again instead of refusing the folder
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT")
    assert main(args) == 2  # outside a restart, an existing run is never overwritten


def test_command_line_help_and_errors(capsys, monkeypatch):
    assert main(["train", "--help"]) == 0
    assert "the global batch" in " ".join(capsys.readouterr().out.split())
    assert main(["train", "vae", "--dist-timeout", "0", "--out", "x"]) == 2
    assert "expected a positive number of seconds" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["datasets"]) == 2
    assert "only vaelab train runs under torchrun" in capsys.readouterr().err
