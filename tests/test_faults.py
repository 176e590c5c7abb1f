"""A run survives SIGKILL at any moment, also in the middle of writing a checkpoint: it resumes
from the last complete checkpoint and ends with the same weights, bit for bit, as a run that was
never interrupted.

Each training process is a real `vaelab train` in its own process. Kills during a save are
placed exactly: a wrapper makes the process SIGKILL itself at the n-th file replacement of its
n-th checkpoint (every os.replace of a save: the staged files, the commit record, the renames),
so every point of the save protocol is hit; kills at random training steps cover the rest.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaelab.data import write_idx
from vaelab.training import checkpoint
from vaelab.training.checkpoint import MANIFEST, MODEL_FILE, read_safetensors

pytestmark = pytest.mark.slow

EPOCHS = 3
SAVES_PER_RUN = EPOCHS  # one checkpoint per epoch
REPLACES_PER_SAVE = 8  # 3 staged files + commit record + 3 renames + the manifest

# Runs `vaelab train` with os.replace patched to SIGKILL this process at a chosen replacement
# (counted over the whole process): argv = [kill_at, *vaelab arguments].
KILLER = """
import os, signal, sys
kill_at = int(sys.argv[1])
count = 0
real_replace = os.replace
def replace(src, dst, *a, **k):
    global count
    count += 1
    if count == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *a, **k)
os.replace = replace
from vaelab.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, mnist_sample):
    folder = tmp_path_factory.mktemp("idx")
    write_idx(folder / "train-images-idx3-ubyte", mnist_sample.train_images[:384, 0].numpy())
    write_idx(folder / "t10k-images-idx3-ubyte", mnist_sample.test_images[:64, 0].numpy())
    write_idx(
        folder / "train-labels-idx1-ubyte", mnist_sample.train_labels[:384].numpy().astype("u1")
    )
    write_idx(folder / "t10k-labels-idx1-ubyte", mnist_sample.test_labels[:64].numpy().astype("u1"))
    return f"idx:{folder}"


def train_args(dataset: str, out: Path) -> list[str]:
    return ["train", "vae", "--dataset", dataset, "--hidden", "32", "--latent-dim", "2",
            "--epochs", str(EPOCHS), "--batch-size", "32", "--out", str(out),
            "--quiet", "--no-report"]  # fmt: skip


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_vaelab(args: list[str], kill_at: int = 0) -> int:
    argv = [sys.executable, "-c", KILLER, str(kill_at), *args]
    return subprocess.run(argv, env=env(), capture_output=True, timeout=120).returncode


def finished(run: Path) -> bool:
    if not (run / MANIFEST).exists():
        return False
    return json.loads((run / "train_state.json").read_text())["epoch"] == EPOCHS


def resume_until_done(dataset: str, run: Path) -> None:
    for _ in range(5):
        if finished(run):
            return
        if (run / "config.json").exists():  # a run killed before its first checkpoint too
            args = ["train", "vae", "--resume", str(run), "--quiet", "--no-report"]
        else:
            args = train_args(dataset, run)
        assert run_vaelab(args) == 0
    assert finished(run)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    assert run_vaelab(train_args(dataset, run)) == 0
    return read_safetensors(run / MODEL_FILE)


def assert_same_weights(run: Path, reference: dict) -> None:
    weights = read_safetensors(run / MODEL_FILE)
    assert weights.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(weights[key], value), key


# The second save has a complete checkpoint before it (every point); the first has none, so a
# kill before its commit makes `--resume` start the run again (the points on either side).
KILL_POINTS = [(2, point) for point in range(1, REPLACES_PER_SAVE + 1)]
KILL_POINTS += [(1, point) for point in (1, 4, 5, REPLACES_PER_SAVE)]


@pytest.mark.parametrize("save,point", KILL_POINTS)
def test_a_kill_at_every_point_of_a_save_resumes_to_the_same_weights(
    dataset, reference, tmp_path, save, point
):
    run = tmp_path / "run"
    before = replaces_before_save(dataset, tmp_path, save)
    assert run_vaelab(train_args(dataset, run), kill_at=before + point) == -signal.SIGKILL
    if save == 2:  # the first epoch's checkpoint is complete, whatever the point
        assert json.loads((run / "train_state.json").read_text())["epoch"] in (1, 2)
    resume_until_done(dataset, run)
    assert_same_weights(run, reference)
    leftovers = [p.name for p in run.iterdir() if ".next" in p.name or p.name.startswith(".")]
    assert not leftovers  # staged and temp files are cleaned up


_COUNTS: dict[int, int] = {}

# Counts the os.replace calls a run makes before each save_checkpoint call, then stops.
PROBE = """
import os, sys
import vaelab.training.checkpoint as ck
count = 0
real = os.replace
def replace(*a, **k):
    global count
    count += 1
    return real(*a, **k)
os.replace = replace
real_save = ck.save_checkpoint
saves = 0
def save(*a, **k):
    global saves
    saves += 1
    print("SAVE", saves, count, flush=True)
    if saves == 2:
        os._exit(0)
    return real_save(*a, **k)
ck.save_checkpoint = save
from vaelab.cli import main
main(sys.argv[1:])
"""


def replaces_before_save(dataset: str, tmp_path: Path, save: int) -> int:
    """os.replace calls a run makes before its n-th checkpoint begins (measured once)."""
    if not _COUNTS:
        args = train_args(dataset, tmp_path / "probe")
        out = subprocess.run([sys.executable, "-c", PROBE, *args], env=env(),
                             capture_output=True, text=True, timeout=120).stdout  # fmt: skip
        for line in out.splitlines():
            if line.startswith("SAVE"):
                _, n, count = line.split()
                _COUNTS[int(n)] = int(count)
    return _COUNTS[save]


# Runs `vaelab train` and SIGKILLs itself when its training step number kill_at begins
# (counted in this process): argv = [kill_at, *vaelab arguments].
STEP_KILLER = """
import os, signal, sys
from vaelab.training import trainer
kill_at = int(sys.argv[1])
count = 0
real_step = trainer.Trainer.train_step
def train_step(self, *a, **k):
    global count
    count += 1
    if count == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_step(self, *a, **k)
trainer.Trainer.train_step = train_step
from vaelab.cli import main
sys.exit(main(sys.argv[2:]))
"""
STEPS_PER_EPOCH = 384 // 32


def test_kills_at_random_steps_resume_to_the_same_weights(dataset, reference, tmp_path):
    rng = random.Random(0)
    run = tmp_path / "run"
    for kill in range(3):  # a checkpoint is at an epoch end: a full epoch of steps remains
        step = rng.randint(1, STEPS_PER_EPOCH)
        args = train_args(dataset, run)
        if (run / "config.json").exists():
            args = ["train", "vae", "--resume", str(run), "--quiet", "--no-report"]
        argv = [sys.executable, "-c", STEP_KILLER, str(step), *args]
        code = subprocess.run(argv, env=env(), capture_output=True, timeout=120).returncode
        assert code == -signal.SIGKILL, (kill, step)
    resume_until_done(dataset, run)
    assert_same_weights(run, reference)


def test_a_torn_checkpoint_without_its_commit_record_is_refused(dataset, tmp_path):
    run = tmp_path / "run"
    assert run_vaelab(train_args(dataset, run)) == 0
    (run / MODEL_FILE).write_bytes((run / MODEL_FILE).read_bytes()[:-7])  # torn by hand
    with pytest.raises(checkpoint.VaelabError, match="sha256|does not match"):
        checkpoint.load_weights(run, torch.nn.Linear(1, 1))
