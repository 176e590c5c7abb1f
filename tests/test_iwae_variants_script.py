"""benchmarks/iwae_variants.py end to end at a tiny budget: every model trains and is evaluated,
the SNR is measured for each K and net, and the JSON and the figure are written (the figure
also from the JSON alone)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "iwae_variants.py"


def load_script():
    spec = importlib.util.spec_from_file_location("iwae_variants", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_tiny_budget_writes_every_row_the_snr_and_the_figure(tmp_path):
    script = load_script()
    out, figure = tmp_path / "variants.json", tmp_path / "snr.png"
    tiny = "--max-steps 2 --train-images 64 --batch-size 16 --hidden 16 --latent-dim 2 --k-eval 8"
    tiny += " --eval-images 10 --snr-ks 1 4 --snr-reps 3 --snr-batch 4"
    argv = [*tiny.split(), "--out", str(out), "--figure", str(figure)]
    assert script.main(argv, say=lambda line: None) == 0
    results = json.loads(out.read_text())
    assert [r["model"] for r in results["rows"]] == [label for label, _, _ in script.RUNS]
    for row in results["rows"]:
        assert row["steps"] == 2 and row["test_nll"] <= row["test_neg_elbo"] + 1.0
    for net in ("encoder", "decoder"):
        assert set(results["snr"][net]) == {"1", "4"}
        assert all(s["median"] > 0 and s["parameters"] > 0 for s in results["snr"][net].values())
    assert results["command"].startswith("python benchmarks/iwae_variants.py --max-steps 2")
    assert results["settings"]["k_eval"] == 8 and results["settings"]["train_images"] == 64
    assert {"date", "machine", "seeds"} <= set(results)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figure.unlink()
    assert script.main(["--plot-only", "--out", str(out), "--figure", str(figure)]) == 0
    assert figure.stat().st_size > 0


def test_the_snr_summary_is_over_the_parameters_whose_gradient_is_not_always_zero():
    script = load_script()
    mean, std = torch.tensor([2.0, -3.0, 0.0]), torch.tensor([1.0, 6.0, 0.0])
    summary = script.snr_summary(mean, std)
    assert summary["parameters"] == 2 and summary["zero_gradient"] == 1
    assert summary["median"] == 1.25  # quartiles of {2, 0.5}, linear interpolation


def test_the_machine_is_the_first_model_name_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\n\nmodel name\t: Other\n")
    assert load_script().machine(info) == "Some CPU @ 2.0GHz"
