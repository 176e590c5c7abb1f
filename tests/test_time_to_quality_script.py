"""benchmarks/time_to_quality.py at a tiny budget: snapshots of best/ taken as training time
passes, each evaluated, the curve recorded with its machine, date and command."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import time_to_quality  # noqa: E402


@pytest.mark.slow
def test_time_to_quality_records_a_curve(tmp_path):
    out = tmp_path / "ttq.json"
    argv = ["--budget", "3s", "--minutes", "0.01,0.02", "--k", "3", "--eval-limit", "20",
            "--train-option", "--dataset mnist-sample", "--train-option", "--validation 1000",
            "--out", str(out)]  # fmt: skip
    assert time_to_quality.main(argv) == 0
    result = json.loads(out.read_text())
    (curve,) = result["curves"]
    assert curve["recipe"] == "default" and len(curve["points"]) == 2
    for point in curve["points"]:
        assert point["images"] == 20 and point["k"] == 3 and point["nll"] > 0
        assert point["trained_seconds"] > 0
    assert result["machine"] and result["date"] and result["k"] == 3


def test_an_unknown_recipe_is_refused(capsys):
    with pytest.raises(SystemExit):
        time_to_quality.main(["--recipes", "default,turbo"])
    assert "unknown recipe(s) turbo" in capsys.readouterr().err
