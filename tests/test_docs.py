"""docs/*.md (and the README where it says so): every command runs as written with the small
budgets of tests/doc_commands.py, every fence names its language, every link resolves, and the
prose is written for a user of the tool, not about the work that made it."""

import re
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from doc_commands import (
    DOCS,
    LANGUAGES,
    ROOT,
    NoRule,
    command_lines,
    cut_classifiers,
    fenced_blocks,
    plan,
    prepare,
    run_step,
)
from vaelab.cli import build_parser

DOC_FILES = [path for path in DOCS if path.parent.name == "docs"]
# Words that point at the making of vaelab rather than at its use: a ticket, a working session,
# "here" for the machine that measured (name the machine instead), the authors' own machines.
FORBIDDEN = re.compile(r"\b(the issue|issues?|sessions?|this session|here|our machines?)\b", re.I)
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("doc", DOCS, ids=name)
def test_every_fence_names_its_language(doc):
    languages = [language for language, _ in fenced_blocks(doc.read_text())]
    assert [lang for lang in languages if lang not in LANGUAGES] == [], (
        f"{name(doc)}: fence every block as one of {LANGUAGES} (commands go in ```sh)"
    )


@pytest.mark.parametrize("doc", DOCS, ids=name)
def test_every_command_has_a_rule_and_valid_options(doc):
    parser = build_parser()
    for line in command_lines(doc.read_text()):
        try:
            step = plan(line)
        except NoRule as err:
            pytest.fail(f"{name(doc)}: {err}")
        if step.kind in ("vaelab", "serve"):
            args, extra = parser.parse_known_args(step.argv)
            assert extra == [] or args.command == "bench", f"{name(doc)}: `{line}`: {extra}"
        if step.kind == "make":
            target = step.argv[-1]
            makefile = (ROOT / "Makefile").read_text()
            assert re.search(rf"^{target}:", makefile, re.M), f"no make target {target}"


def prose(text: str) -> list[tuple[int, str]]:
    """(line number, words) of a document's sentences: every line outside the fenced blocks,
    and inside them only the comments (code may call an API `session`)."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
        elif "#" in line:
            lines.append((number, line.split("#", 1)[1]))
    return lines


@pytest.mark.parametrize("doc", DOCS, ids=name)
def test_prose_is_for_users_of_the_tool(doc):
    hits = [f"{name(doc)}:{n}: {line.strip()}" for n, line in prose(doc.read_text())]
    hits = [hit for hit in hits if FORBIDDEN.search(hit.split(": ", 1)[1])]
    assert hits == [], "name the machine, the date or the file instead:\n" + "\n".join(hits)


def test_forbidden_words_are_caught():
    for text in ("as the issue asks", "measured here", "on our machines", "in this session"):
        assert FORBIDDEN.search(text), text
    for text in ("where it was found", "there", "the issuer", "hereafter", "InferenceSession"):
        assert not FORBIDDEN.search(text), text
    text = "Here.\n```sh\nvaelab datasets  # 2 s here\n```\n```python\nsession = 1\n```\n"
    assert prose(text) == [(1, "Here."), (3, " 2 s here")]


@pytest.mark.parametrize("doc", DOCS, ids=name)
def test_links_resolve(doc):
    targets = [m.group(1) for m in LINK.finditer(doc.read_text()) if "://" not in m.group(1)]
    missing = [t for t in targets if not (doc.parent / t).exists()]
    assert missing == [], f"{name(doc)} links to missing files: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOC_FILES, ids=name)
def test_commands_and_examples_run(doc, tmp_path, monkeypatch, capsys):
    if not (SHARED_DATA / "fashion-mnist").is_dir():
        pytest.skip("../shared/data is not beside the repository")
    prepare(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("VAELAB_DATA", str(SHARED_DATA))
    cut_classifiers(monkeypatch)
    text = doc.read_text()
    for line in command_lines(text):
        outcome = run_step(plan(line), line)
        with capsys.disabled():
            print(f"\n  {name(doc)}: {line} -> {outcome}", end="")
    for number, (language, code) in enumerate(fenced_blocks(text)):
        if language == "python":
            exec(compile(code, f"{name(doc)} python block {number}", "exec"), {})
