"""The commands that README.md and docs/*.md show, and the one set of rules by which the tests run
each of them on a small budget (tests/test_readme.py, tests/test_docs.py).

A document shows commands in ```sh blocks, Python in ```python blocks and anything else (a
tree, an error message) in ```text blocks; a fence without a language is refused, so no command
hides from the tests. Each line of a ```sh block (a trailing backslash continues it) is one
command, run in a fresh folder in the order the document gives, with these cuts:

- `vaelab train`: one epoch of batches of 1,000 and at most 60 steps (`--resume`: one more
  epoch, 120 steps in all); `vaelab eval`: 50 images and k = 100; `vaelab tour`: `--quick`;
  `vaelab bench`: 1 pair of 1 epoch on the shipped sample; `vaelab serve`: started on a free
  port, its page fetched, then stopped with Ctrl-C; every vaelab command `--quiet`.
- `python benchmarks/SCRIPT.py`: the script's own budget flags (SCRIPT_CUTS), run in this
  process (so that `cut_classifiers` holds for it too), its JSON written into the folder, never
  into benchmarks/results/; `benchmarks/tables.py` runs as `--check`.
- every classifier (the evaluation's reference CNN, a script's own): `cut_classifiers`.
- `torchrun ... -m vaelab train ...`: the same cuts, run through `python -m torch.distributed.run`;
  skipped, with the reason, when it needs more machines or more GPUs than the test has.
- `make TARGET`: `make -n TARGET` in the repository (`make test` is this suite itself).
A command that matches no rule fails the test: write its rule here first.
"""

from __future__ import annotations

import os
import re
import runpy
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = ("sh", "python", "text")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")

TRAIN_CUT = ["--epochs", "1", "--batch-size", "1000", "--max-steps", "60"]
RESUME_CUT = ["--epochs", "2", "--max-steps", "120"]  # a resume may change only these
VAELAB_CUTS = {
    "eval": ["--limit", "50", "--k", "100"],
    "tour": ["--quick"],
    "bench": ["--pairs", "1", "--epochs", "1", "--dataset", "mnist-sample", "--out", "bench.json"],
    "sample": [],
    "report": [],
    "datasets": [],
    "export": [],
    "serve": ["--port", "0"],
}
IWAE_VARIANTS_CUT = ["--max-steps", "2", "--train-images", "64", "--batch-size", "16",
                     "--hidden", "16", "--latent-dim", "2", "--k-eval", "8", "--eval-images",
                     "10", "--snr-ks", "1", "4", "--snr-reps", "3", "--snr-batch", "4",
                     "--figure", "iwae_snr.png"]  # fmt: skip
REPRODUCE_IWAE_CUT = shlex.split(
    "--epochs 1 --batch-size 999 --k 9 --eval-limit 9 --train-limit 3000"
)
DISENTANGLEMENT_CUT = shlex.split(
    "--steps 1 --batch-size 16 --latent-dim 3 --hidden 16 --eval-images 100"
)
SCRIPT_CUTS = {  # each benchmark script's own flags for a run of seconds
    "reproduce_fashion.py": ["--epochs", "1", "--k", "10", "--limit", "20"],
    "model_family.py": shlex.split(
        "--epochs 1 --hidden 32 --latents 2 --k-eval 10 --train-images 500"
    ),
    "posthoc_sampler.py": ["--epochs", "1", "--hidden", "32", "--latent", "2", "--components", "3"],
    "reproduce_iwae.py": REPRODUCE_IWAE_CUT,
    "iwae_variants.py": IWAE_VARIANTS_CUT,
    "disentanglement.py": DISENTANGLEMENT_CUT,
    "speed_models.py": ["--images", "512", "--pairs", "1", "--k", "100", "--eval-images", "10"],
    "precision.py": ["--repeats", "1", "--epochs", "1"],
    "distributed.py": ["--repeats", "1", "--epochs", "1"],
    "contention.py": shlex.split("--rounds 1 --seconds 1 --limit 512 --dataset mnist-sample"),
    "startup.py": ["--repeats", "1"],
    "soak.py": ["--kills", "2"],
    "aae_match.py": ["--settings", "base", "--epochs-scale", "0.05"],
    "public_api.py": ["--rounds", "1", "--seconds", "0.1"],
    "bench_revisions.py": shlex.split("--rounds 1 --pairs 1 --epochs 1 --dataset mnist-sample"),
    "tables.py": ["--check"],
}


class NoRule(ValueError):
    """A documented command that no rule of this module knows how to run."""


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, read fence by fence: a closing fence never opens
    a block, so prose between blocks is never taken for code."""
    found, block, language = [], None, ""
    for line in text.splitlines():
        if block is None:
            if line.startswith("```"):
                block, language = [], line[3:].strip()
        elif line.strip() == "```":
            found.append((language, "\n".join(block) + "\n"))
            block = None
        else:
            block.append(line)
    return found


def command_lines(text: str) -> list[str]:
    """Each command of the ```sh blocks: continuation lines joined, blank lines left out."""
    lines = []
    for language, code in fenced_blocks(text):
        if language == "sh":
            joined = code.replace("\\\n", " ")
            lines += [line.strip() for line in joined.splitlines() if line.strip()]
    return lines


@dataclass
class Step:
    """How a test runs one documented command: `kind` says which runner, `argv` what it runs."""

    kind: str  # vaelab, script (both in this process), serve, process, make, skip
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    reason: str = ""


def cut_vaelab(args: list[str]) -> list[str]:
    command = args[0] if args else ""
    if command == "train":
        return [*args, *(RESUME_CUT if "--resume" in args else TRAIN_CUT), "--quiet"]
    if command not in VAELAB_CUTS:
        raise NoRule(f"no budget rule for `vaelab {command}`")
    return [*args, *VAELAB_CUTS[command], "--quiet"]


def plan_torchrun(args: list[str], env: dict[str, str]) -> Step:
    if "-m" not in args or args[args.index("-m") + 1] != "vaelab":
        raise NoRule("torchrun runs only `-m vaelab train` in these documents")
    at = args.index("-m")
    options, vaelab_args = args[:at], args[at + 2 :]
    if vaelab_args[:1] != ["train"]:
        raise NoRule("only vaelab train runs under torchrun")
    nodes = options[options.index("--nnodes") + 1] if "--nnodes" in options else "1"
    if nodes != "1":
        return Step("skip", args, env, f"needs {nodes} machines that reach one another")
    procs = int(options[options.index("--nproc-per-node") + 1])
    if "cuda" in vaelab_args:
        import torch

        if torch.cuda.device_count() < procs:
            return Step("skip", args, env, f"needs {procs} CUDA GPUs on one machine")
    argv = [sys.executable, "-m", "torch.distributed.run", *options, "-m", "vaelab"]
    return Step("process", [*argv, *cut_vaelab(vaelab_args)], env)


def plan(line: str) -> Step:
    """The budget-cut step for one documented command line."""
    words = shlex.split(line, comments=True)
    env = {}
    while words and ENV_ASSIGNMENT.match(words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    head, args = (words[0], words[1:]) if words else ("", [])
    if head == "vaelab":
        kind = "serve" if args[:1] == ["serve"] else "vaelab"
        return Step(kind, cut_vaelab(args), env)
    if head == "python" and args and args[0].startswith("benchmarks/"):
        script = Path(args[0]).name
        if script not in SCRIPT_CUTS:
            raise NoRule(f"no budget rule for benchmarks/{script}")
        out = [] if script == "tables.py" else ["--out", f"{Path(script).stem}.json"]
        return Step("script", [str(ROOT / args[0]), *args[1:], *SCRIPT_CUTS[script], *out], env)
    if head == "torchrun":
        return plan_torchrun(args, env)
    if head == "make" and len(args) == 1:
        return Step("make", ["make", "-n", args[0]], env)
    raise NoRule(f"no rule runs `{line}`")


def prepare(folder: Path) -> None:
    """What the documents' commands expect beside them: the recipes of configs/ and the image
    folder `my-images` (two classes of small noisy colour images)."""
    import numpy as np
    from PIL import Image

    shutil.copytree(ROOT / "configs", folder / "configs")
    rng = np.random.default_rng(0)
    for name, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (folder / "my-images" / name).mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(rng.integers(-30, 30, (12, 10, 3)) + colour, 0, 255)
            Image.fromarray(np.uint8(pixels)).save(folder / "my-images" / name / f"{i}.png")


def cut_classifiers(monkeypatch, images: int = 2000) -> None:
    """The reference classifier and every classifier a script trains: one epoch on the first
    2,000 images (where they hold every class), not eight on all of them."""
    from vaelab.evaluation import classifier

    train = classifier.train_classifier

    def one_epoch(x, y, epochs=1, *args, **kwargs):
        if len(y) > images and y[:images].max() == y.max():
            x, y = x[:images], y[:images]
        return train(x, y, 1, *args, **kwargs)

    monkeypatch.setattr(classifier, "REFERENCE_EPOCHS", 1)
    monkeypatch.setattr(classifier, "train_classifier", one_epoch)


@contextmanager
def environment(env: dict[str, str]):
    """os.environ with `env` set, as it was afterwards."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.update({name: value})


def run_script(argv: list[str]) -> None:
    """A benchmark script as `python SCRIPT ARGS` runs it, in this process."""
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv, sys.path[:0] = argv, [str(Path(argv[0]).parent)]
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exit_:
        assert exit_.code in (0, None), f"{shlex.join(argv)} exited with {exit_.code}"
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def serve_and_stop(argv: list[str], env: dict[str, str], timeout: float = 120) -> None:
    """Start `vaelab serve`, fetch the page at the address it prints, stop it with Ctrl-C."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vaelab", *argv],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()
        match = re.search(r"at (http://\S+)", first)
        assert match, f"vaelab serve printed {first!r}; stderr: {process.stderr.read()}"
        with urllib.request.urlopen(match.group(1), timeout=timeout) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=timeout) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def run_step(step: Step, line: str) -> str:
    """Run one step (the working directory is the run folder); the outcome in words."""
    start = time.perf_counter()
    outcome = _run(step, line)
    return f"{outcome} ({time.perf_counter() - start:.1f} s)"


def _run(step: Step, line: str) -> str:
    if step.kind == "skip":
        return f"skipped: {step.reason}"
    if step.kind == "vaelab":
        from vaelab.cli import main

        with environment(step.env):
            assert main(step.argv) == 0, f"`{line}` failed (ran vaelab {shlex.join(step.argv)})"
        return "ran"
    if step.kind == "script":
        with environment(step.env):
            run_script(step.argv)
        return "ran"
    if step.kind == "serve":
        serve_and_stop(step.argv, step.env)
        return "served and stopped"
    cwd = ROOT if step.kind == "make" else None  # make -n: the target, never its recipe
    env = {**os.environ, **step.env}
    done = subprocess.run(step.argv, cwd=cwd, env=env, capture_output=True, text=True)
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, f"`{line}` failed (ran {shlex.join(step.argv)}):\n{output}"
    return "dry run (make -n)" if step.kind == "make" else "ran"
