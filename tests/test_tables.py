"""benchmarks/tables.py: the result tables of README.md and docs/*.md are what the committed
JSON files make, so a hand edit or a stale table fails here."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("tables", ROOT / "benchmarks" / "tables.py")
tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tables)


def test_committed_tables_are_what_the_json_makes():
    fresh = tables.render(tables.documents())
    stale = [
        str(path.relative_to(ROOT)) for path, text in fresh.items() if path.read_text() != text
    ]
    assert stale == [], f"run `python benchmarks/tables.py`: stale tables in {stale}"


def test_check_exits_0_on_the_committed_docs(capsys):
    assert tables.main(["--check"]) == 0


@pytest.fixture
def checkout(tmp_path):
    """A copy of the documents and results, for edits the committed ones must not see."""
    (tmp_path / "docs").mkdir()
    for doc in tables.documents():
        shutil.copy(doc, tmp_path / doc.relative_to(ROOT))
    shutil.copytree(tables.RESULTS, tmp_path / "results")
    return tmp_path


def test_a_hand_edit_inside_a_table_is_undone(checkout):
    doc = checkout / "docs" / "results.md"
    committed = doc.read_text()
    start = committed.index("<!-- table:fashion-protocol -->")
    edited = committed[:start] + committed[start:].replace("226.38", "225.00", 1)
    doc.write_text(edited)
    fresh = tables.render(tables.documents(checkout), checkout / "results")
    assert fresh[doc] == committed != edited


def test_a_changed_result_changes_its_table(checkout):
    path = checkout / "results" / "reproduce_fashion.json"
    data = json.loads(path.read_text())
    data["rows"][0]["test_nll"] = 200.0
    path.write_text(json.dumps(data))
    fresh = tables.render(tables.documents(checkout), checkout / "results")
    assert "200.00 +- " in fresh[checkout / "docs" / "results.md"]


def test_missing_fields_read_not_recorded():
    assert (
        tables.provenance({})
        == ["not recorded", "processor not recorded, not recorded"] + ["not recorded"] * 2
    )
    meta = {"machine": {"processor": "Intel(R) Xeon(R) Processor (family 6)", "cpu_count": 2}}
    row = {"date": "2026-11-27", "seed": 0, "command": "vaelab bench"}
    assert tables.provenance(meta, row) == [
        "2026-11-27",
        "Intel Xeon (family 6), 2 cores",
        "0",
        "`vaelab bench`",
    ]


def test_unknown_and_repeated_tables_are_refused(checkout):
    doc = checkout / "docs" / "results.md"
    doc.write_text(doc.read_text() + "<!-- table:nonesuch -->\n<!-- /table:nonesuch -->\n")
    with pytest.raises(tables.TableError, match="unknown table"):
        tables.render(tables.documents(checkout), checkout / "results")
    doc.write_text(doc.read_text().replace("nonesuch", "distributed"))
    with pytest.raises(tables.TableError, match="'distributed' appears 2 times"):
        tables.render(tables.documents(checkout), checkout / "results")
