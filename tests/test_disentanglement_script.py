"""benchmarks/disentanglement.py at a tiny budget: what it trains, scores and records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from vaelab.data import shapes
from vaelab.models import MODELS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "disentanglement.py"


def test_tiny_budget_writes_every_model_and_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(shapes, "DEFAULT", shapes.ShapesSpec(train=200, test=700, seed=5))
    spec = importlib.util.spec_from_file_location("disentanglement_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "result.json"
    argv = ["--steps", "1", "--seeds", "0,1", "--batch-size", "16", "--latent-dim", "3",
            "--hidden", "16", "--eval-images", "100", "--out", str(out)]  # fmt: skip
    result = script.main(argv)
    assert json.loads(out.read_text()) == result
    models = [label for label, name, _ in script.MODELS_TO_RUN if name in MODELS]
    assert [(r["model"], r["seed"]) for r in result["rows"]] == [
        (m, s) for s in (0, 1) for m in models
    ]
    assert result["skipped"] == [m for m, name, _ in script.MODELS_TO_RUN if name not in MODELS]
    for row in result["rows"]:
        assert 0 <= row["mig"] <= 1 and 0 <= row["dci_disentanglement"] <= 1
        assert len(row["mig_per_factor"]) == 5
    assert [s["model"] for s in result["summary"]] == models
    assert result["seeds"] == [0, 1] and result["settings"]["steps"] == 1
    assert result["command"].endswith("--out " + str(out))
    info = Path("/proc/cpuinfo")
    names = [line for line in info.read_text().splitlines() if line.startswith("model name")]
    if names:  # the first processor's name, as the kernel gives it
        assert result["machine"] == names[0].partition(":")[2].strip()
