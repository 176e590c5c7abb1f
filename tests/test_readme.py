"""The README's commands and its Python example run as written (with small budgets)."""

import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA
from vaelab.cli import main
from vaelab.evaluation import classifier

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def blocks(language: str) -> list[str]:
    """The code blocks fenced as ```language (plain ``` for ""), read fence by fence: a closing
    fence never opens a block, so prose between blocks is never taken for code."""
    found, block, keep = [], None, False
    for line in README.splitlines():
        if block is None:
            if line.startswith("```"):
                block, keep = [], line[3:].strip() == language
        elif line.strip() == "```":
            if keep:
                found.append("\n".join(block) + "\n")
            block = None
        else:
            block.append(line)
    return found


def cli_lines() -> list[list[str]]:
    """Every `vaelab ...` line of the README's command-line section, comments dropped."""
    lines = [line.split("#")[0].strip() for block in blocks("") for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("vaelab ")]


def test_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (code,) = blocks("python")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["images"].shape == (16, 1, 28, 28)
    assert (tmp_path / "runs/api-example/report.html").is_file()


def make_image_folder(root):
    """The README's `my-images`: two classes of small noisy colour images."""
    rng = np.random.default_rng(0)
    for name, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (root / name).mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(rng.integers(-30, 30, (12, 10, 3)) + colour, 0, 255)
            Image.fromarray(np.uint8(pixels)).save(root / name / f"{i}.png")


@pytest.mark.slow
def test_command_line_examples_run(tmp_path, monkeypatch):
    if not (SHARED_DATA / "fashion-mnist").is_dir():
        pytest.skip("../shared/data is not beside the repository")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(classifier, "REFERENCE_EPOCHS", 1)
    make_image_folder(tmp_path / "my-images")
    commands = cli_lines()
    assert len(commands) >= 6
    for argv in commands:
        argv = [a.replace("../shared/data", str(SHARED_DATA)) for a in argv]
        if argv[0] == "serve":  # serves until Ctrl-C: tests/test_serve_*.py run it for real
            continue
        if argv[0] == "train":  # the README's budgets, cut to a few steps
            argv += ["--max-steps", "60" if "--resume" in argv else "30"]
        if argv[0] == "tour":
            argv += ["--quick"]
        if argv[0] == "eval":
            argv += ["--limit", "50", "--k", "100"]
        assert main([*argv, "--quiet"]) == 0, argv
    assert (tmp_path / "samples.png").is_file()
    assert (tmp_path / "runs/vae2/report.html").is_file()
    assert (tmp_path / "runs/mine/report.html").is_file()
    assert (tmp_path / "my-samples.png").is_file()
