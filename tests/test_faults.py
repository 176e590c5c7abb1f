"""A run survives SIGKILL at any moment, also in the middle of writing a checkpoint: it resumes
from the last complete checkpoint and ends with the same weights, bit for bit, as a run that was
never interrupted. And a disk that refuses a write (full, a file-size limit, no permission,
read-only) stops the command with one error naming the file, the last checkpoint intact.

Each training process is a real `vaelab train` in its own process. Kills during a save are
placed exactly: a wrapper makes the process SIGKILL itself at the n-th file replacement of its
n-th checkpoint (every os.replace of a save: the staged files, the commit record, the renames),
so every point of the save protocol is hit; kills at random training steps cover the rest
(tests/test_soak.py kills a whole train, eval and report sequence at random moments).

Disk faults are injected at the system call that each writer makes (the temp file's creation,
its writes, fsync, os.replace) for every writer of a run folder, and met for real: a file-size
limit (RLIMIT_FSIZE) in a subprocess and, where mounting is allowed, a full and a read-only
tmpfs.
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from vaelab import fileio
from vaelab.cli import main
from vaelab.data import write_idx
from vaelab.errors import VaelabError
from vaelab.run import read_history, write_eval, write_history
from vaelab.training import checkpoint
from vaelab.training.checkpoint import (
    CHECKPOINT_FILES,
    MANIFEST,
    MODEL_FILE,
    read_safetensors,
    verify_manifest,
)
from vaelab.viz.figures import image_grid, save_figure
from vaelab.viz.report import Section, write_report

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_torn_checkpoint_without_its_commit_record_is_refused(dataset, tmp_path):
    run = tmp_path / "run"
    assert run_vaelab(train_args(dataset, run)) == 0
    (run / MODEL_FILE).write_bytes((run / MODEL_FILE).read_bytes()[:-7])  # torn by hand
    with pytest.raises(checkpoint.VaelabError, match="sha256|does not match"):
        checkpoint.load_weights(run, torch.nn.Linear(1, 1))


# ---- disk faults: every writer of a run folder, each system call it makes

ERRNOS = [errno.ENOSPC, errno.EFBIG, errno.EACCES, errno.EROFS]
CALLS = ["create", "write", "fsync", "replace"]
KEPT = (*CHECKPOINT_FILES, MANIFEST)  # the last complete checkpoint


def refused(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def inject(monkeypatch, call: str, code: int, hit) -> None:
    """Make one system call of fileio's writers fail with `code` for the paths `hit` picks."""
    if call == "create":
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, prefix="", dir=None, **kwargs):
            if hit(Path(dir, prefix[1:].rsplit(".", 2)[0])):  # prefix: .NAME.PID.
                raise refused(code)
            return real_mkstemp(*args, prefix=prefix, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    elif call == "write":

        class Refusing(io.FileIO):
            def write(self, data):
                raise refused(code)

        def opener(path, mode="r", *args, **kwargs):
            if hit(final_path(path)):
                return Refusing(path, "wb")
            return open(path, mode, *args, **kwargs)

        monkeypatch.setattr(fileio, "open", opener, raising=False)
    elif call == "fsync":
        real_fsync = os.fsync

        def fsync(fd):
            if hit(final_path(os.readlink(f"/proc/self/fd/{fd}"))):
                raise refused(code)
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    else:
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if hit(Path(dst)):
                raise refused(code)
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)


def final_path(path) -> Path:
    """The file a temp file `.NAME.PID.RANDOM.tmp` stands in for: NAME in the same folder."""
    path = Path(path)
    if path.name.startswith(".") and path.name.endswith(".tmp"):
        return path.with_name(path.name[1:].rsplit(".", 3)[0])
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


def fault_train_args(dataset: str, out: Path, epochs: int) -> list[str]:
    return ["train", "vae", "--dataset", dataset, "--hidden", "32", "--latent-dim", "2",
            "--epochs", str(epochs), "--batch-size", "64", "--validation", "64",
            "--out", str(out), "--quiet", "--no-report"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """A 2-epoch run with a validation set (so best/ exists), trained in this process."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(fault_train_args(dataset, run, 2)) == 0
    return run


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def resume_args(run: Path, epochs: int = 3) -> list[str]:
    return ["train", "vae", "--resume", str(run), "--epochs", str(epochs), "--quiet", "--no-report"]


def epoch_of(run: Path) -> int:
    return json.loads((run / "train_state.json").read_text())["epoch"]


def checkpoint_write(run: Path) -> None:
    from vaelab.training.trainer import resume

    resume(run, epochs=3, quiet=True)


def best_write(run: Path) -> None:
    from vaelab.run import load_run

    _, model = load_run(run)
    checkpoint.save_best(run, model, 3, 1.0)


def eval_write(run: Path) -> None:
    write_eval(run, {"split": "test", "images": 1, "k": 1, "nll": 1.0})


def history_write(run: Path) -> None:
    write_history(run, read_history(run) + [{"epoch": 3, "step": 9, "train/samples_per_s": 1.0}])


def report_write(run: Path) -> None:
    write_report(run / "report.html", "a report", [Section("Summary", "text")])


def figure_write(run: Path) -> None:
    save_figure(image_grid(torch.zeros(4, 1, 8, 8), 2), run / "figures" / "samples.png")


# writer -> (how to run it, the file it writes: picked by its final path, shown in the error)
WRITERS = {
    "checkpoint": (checkpoint_write, lambda run: run / f"{MODEL_FILE}.next"),
    "best weights": (best_write, lambda run: run / "best" / f"{MODEL_FILE}.next"),
    "eval.json": (eval_write, lambda run: run / "eval.json"),
    "metrics.jsonl": (history_write, lambda run: run / "metrics.jsonl"),
    "report.html": (report_write, lambda run: run / "report.html"),
    "figure": (figure_write, lambda run: run / "figures" / "samples.png"),
}
FAULTS = [(writer, call, ERRNOS[(i + j) % len(ERRNOS)])
          for i, writer in enumerate(WRITERS) for j, call in enumerate(CALLS)]  # fmt: skip


@pytest.mark.parametrize("writer, call, code", FAULTS,
                         ids=[f"{w}-{c}-{errno.errorcode[e]}" for w, c, e in FAULTS])  # fmt: skip
def test_a_refused_write_is_one_error_naming_the_file_and_keeps_the_last_state(
    run, monkeypatch, writer, call, code
):
    write, target = WRITERS[writer]
    target = target(run)
    target.parent.mkdir(exist_ok=True)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    inject(monkeypatch, call, code, lambda path: path == target)
    with pytest.raises(VaelabError) as refusal:
        write(run)
    monkeypatch.undo()
    message = str(refusal.value)
    assert f"could not write {target}" in message and errno.errorcode[code] in message
    assert "\n" not in message and not leftovers(run)
    assert not (target.exists() and target.name.endswith(".next"))  # staged files removed
    if writer == "checkpoint":  # the epoch it trained wrote its history, events and best/
        before = {p: data for p, data in before.items() if p.parent == run and p.name in KEPT}
    for path, data in before.items():
        assert path.read_bytes() == data, path  # as it was
    verify_manifest(run, CHECKPOINT_FILES)
    verify_manifest(run / "best", (MODEL_FILE,))
    write(run)  # the disk is back: the same write goes through
    assert not leftovers(run)


def test_a_temp_file_of_a_killed_writer_goes_with_the_next_write(tmp_path):
    target = tmp_path / "eval.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    stale = tmp_path / f".eval.json.{dead}.abc123.tmp"  # what a kill mid-write leaves
    live = tmp_path / f".eval.json.{os.getpid()}.def456.tmp"  # a writer that still runs
    stale.write_text("{")
    live.write_text("{")
    write_eval(tmp_path, {"split": "test", "k": 1})
    assert not stale.exists() and live.exists() and target.is_file()


def test_a_refused_move_after_the_commit_is_rolled_forward_by_the_resume(run, monkeypatch):
    inject(monkeypatch, "replace", errno.EROFS, lambda path: path == run / MODEL_FILE)
    with pytest.raises(VaelabError, match=f"could not write {run / MODEL_FILE}: .*EROFS"):
        checkpoint_write(run)
    monkeypatch.undo()
    assert (run / checkpoint.COMMIT).exists()  # committed, not yet moved into place
    assert main(resume_args(run, epochs=4)) == 0  # rolls the commit forward, then goes on
    verify_manifest(run, CHECKPOINT_FILES)
    assert epoch_of(run) == 4 and not leftovers(run)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaelab: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_the_command_line_says_a_refused_write_in_one_line_and_resumes_after(
    run, monkeypatch, capsys
):
    inject(monkeypatch, "write", errno.ENOSPC, lambda path: path == run / f"{MODEL_FILE}.next")
    assert main(resume_args(run)) == 2
    monkeypatch.undo()
    err = one_error_line(capsys)
    assert "the disk is full (ENOSPC)" in err and f"{run} is kept" in err
    assert epoch_of(run) == 2 and not leftovers(run)
    assert main(resume_args(run)) == 0
    verify_manifest(run, CHECKPOINT_FILES)
    assert epoch_of(run) == 3


# Resumes RUN to 3 epochs under a file-size limit of LIMIT bytes: argv = [LIMIT, RUN].
FSIZE_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
from vaelab.cli import main
sys.exit(main(["train", "vae", "--resume", sys.argv[2], "--epochs", "3", "--quiet",
               "--no-report"]))
"""


@pytest.mark.slow
def test_a_real_file_size_limit_stops_training_with_efbig(run):
    weights = (run / MODEL_FILE).stat().st_size
    argv = [sys.executable, "-c", FSIZE_LIMITED, str(weights // 2), str(run)]
    done = subprocess.run(argv, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert err.startswith("vaelab: error: could not write") and "EFBIG" in err and "\n" not in err
    assert MODEL_FILE in err and epoch_of(run) == 2 and not leftovers(run)
    verify_manifest(run, CHECKPOINT_FILES)
    assert main(resume_args(run)) == 0 and epoch_of(run) == 3


@pytest.fixture
def tmpfs(tmp_path):
    """A 4 MB tmpfs mounted for the test (skipped where this process may not mount)."""
    point = tmp_path / "tmpfs"
    point.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(point)]
    try:
        done = subprocess.run(mount, capture_output=True, text=True, timeout=30)
    except OSError as err:
        pytest.skip(f"cannot mount a tmpfs here: {err}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


@pytest.mark.slow
def test_a_full_and_a_read_only_filesystem(dataset, tmpfs, capsys):
    run, steps = tmpfs / "run", 5  # steps per epoch: 320 training images, batches of 64
    assert main([*fault_train_args(dataset, run, 4), "--max-steps", str(2 * steps)]) == 0
    resume = ["train", "vae", "--resume", str(run), "--quiet", "--no-report"]
    free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * (free - 64 * 1024))  # room for the history, not for weights
    assert main([*resume, "--max-steps", str(3 * steps)]) == 2
    err = one_error_line(capsys)
    assert "the disk is full (ENOSPC)" in err and str(run) in err
    assert epoch_of(run) == 2 and not leftovers(run)
    verify_manifest(run, CHECKPOINT_FILES)
    filler.unlink()
    assert main([*resume, "--max-steps", str(3 * steps)]) == 0 and epoch_of(run) == 3
    remount = ["mount", "-o", "remount,ro", str(tmpfs)]
    assert subprocess.run(remount, capture_output=True, timeout=30).returncode == 0
    capsys.readouterr()
    assert main(resume) == 2  # the first write: TensorBoard's events file
    err = one_error_line(capsys)
    assert f"could not write {run / 'events'}" in err and "read-only (EROFS)" in err
    verify_manifest(run, CHECKPOINT_FILES)
    assert epoch_of(run) == 3
