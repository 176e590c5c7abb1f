"""The README: short, its Python example and its commands run as written (with the small budgets
of tests/doc_commands.py), and its code layout matches the tree."""

import re

import pytest

from conftest import SHARED_DATA
from doc_commands import (
    ROOT,
    command_lines,
    cut_classifiers,
    fenced_blocks,
    plan,
    prepare,
    run_step,
)

README_PATH = ROOT / "README.md"
README = README_PATH.read_text()
MAX_LINES = 250
SRC = ROOT / "src" / "vaelab"
NAME = re.compile(r"^[\w.-]+(\.py|/)$")  # a file or folder named in the layout


def test_readme_is_short():
    assert len(README.splitlines()) <= MAX_LINES, "the details belong in docs/"


def test_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (code,) = [code for language, code in fenced_blocks(README) if language == "python"]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["images"].shape == (16, 1, 28, 28)
    assert (tmp_path / "runs/api-example/report.html").is_file()


def layout_paths(readme: str) -> list[str]:
    """The paths the "Code layout" block names, relative to the repository. A line at indent 0
    names a path from the root, one at indent 2 a path under the last such folder; the words of
    a description that end in .py or / are files and folders of the entry's folder, and a line
    indented deeper continues the entry above it."""
    section = readme.split("## Code layout", 1)[1]
    (block, *_) = [code for language, code in fenced_blocks(section) if language == "text"]
    paths, root, folder = [], "", ""
    for line in block.splitlines():
        words = [w.strip(",;:()`") for w in line.split()]
        if not words:
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= 2:
            entry = words.pop(0) if indent == 0 else root + words.pop(0)
            paths.append(entry)
            root = entry if indent == 0 else root
            folder = entry if entry.endswith("/") else root
        paths += [folder + w for w in words if NAME.match(w)]
    return paths


def test_layout_names_paths_that_exist():
    missing = [p for p in layout_paths(README) if not (ROOT / p).exists()]
    assert missing == [], f"README's code layout names paths that are not in the tree: {missing}"


def test_layout_names_every_module():
    named = set(layout_paths(README))
    modules = sorted(
        str(path.relative_to(ROOT))
        for path in SRC.rglob("*.py")
        if path.stem not in ("__init__", "__main__")
    )
    unnamed = [m for m in modules if m not in named]
    assert unnamed == [], f"README's code layout does not name these modules: {unnamed}"


def test_layout_parser_reads_entries_and_descriptions():
    block = "```text\nsrc/vaelab/\n  cli.py  the command\n  data/   idx.py, batches.py (x)\n"
    block += "          folder.py\ndocs/   results/ and more\n```\n"
    assert layout_paths("## Code layout\n" + block) == [
        "src/vaelab/",
        "src/vaelab/cli.py",
        "src/vaelab/data/",
        "src/vaelab/data/idx.py",
        "src/vaelab/data/batches.py",
        "src/vaelab/data/folder.py",
        "docs/",
        "docs/results/",
    ]


@pytest.mark.slow
def test_command_line_examples_run(tmp_path, monkeypatch, capsys):
    if not (SHARED_DATA / "fashion-mnist").is_dir():
        pytest.skip("../shared/data is not beside the repository")
    prepare(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("VAELAB_DATA", str(SHARED_DATA))
    cut_classifiers(monkeypatch)
    lines = command_lines(README)
    assert len(lines) >= 10
    for line in lines:
        outcome = run_step(plan(line), line)
        with capsys.disabled():
            print(f"\n  README.md: {line} -> {outcome}", end="")
    assert (tmp_path / "runs/tour/report.html").is_file()
    assert (tmp_path / "samples.png").is_file()
    assert (tmp_path / "runs/vae2/report.html").is_file()
    assert (tmp_path / "runs/vae2/eval.json").is_file()
    assert (tmp_path / "runs/mine/report.html").is_file()
