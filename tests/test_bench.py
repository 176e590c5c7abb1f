"""`vaelab bench` (benchmarks/bench.py, against benchmarks/recipe.py): the FLOP count against
torch's own counter, and the command end to end."""

import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import vaelab
from vaelab.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench  # noqa: E402  (benchmarks/bench.py)
from recipe import VAE, loss_function  # noqa: E402  (benchmarks/recipe.py)


def test_flops_per_image_matches_torch_flop_counter():
    model, x = VAE(), torch.rand(bench.BATCH, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        recon, mu, logvar = model(x)
        loss_function(recon, x, mu, logvar).backward()
    # Autograd skips the input gradient of the first layer (the data needs none); so do we.
    assert counter.get_total_flops() == bench.BATCH * bench.flops_per_image()


def test_matmul_rate_is_a_positive_rate():
    assert bench.matmul_rate(seconds=0.05) > 1e8  # any CPU of this decade: > 0.1 GFLOP/s


def test_adam_update_is_timed_per_step():
    assert 0 < bench.adam_seconds(seconds=0.05) < 0.5  # 650,000 weights: well under a second


def test_bench_outside_a_source_checkout_is_one_clear_error(tmp_path, monkeypatch, capsys):
    installed = tmp_path / "site-packages" / "vaelab" / "__init__.py"  # no benchmarks/ near it
    monkeypatch.setattr(vaelab, "__file__", str(installed))
    assert main(["bench", "--quick"]) == 2
    assert capsys.readouterr().err.startswith("vaelab: error: vaelab bench needs a source checkout")


def test_bench_passes_its_options_to_the_script(capfd):
    assert main(["bench", "--pairs", "0"]) == 2  # refused by benchmarks/bench.py's own parser
    assert "--pairs and --epochs must be at least 1" in capfd.readouterr().err
    assert main(["bench", "--help"]) == 0
    assert "--quick" in capfd.readouterr().out


@pytest.mark.slow
def test_bench_quick_prints_the_ratio(tmp_path, capfd):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    lines = capfd.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("ratio: ") and float(lines[-1].split()[1]) > 0
    result = json.loads(out.read_text())
    assert result["pairs"] == 3 and len(result["rows"]) == 3
    for side in ("recipe", "vaelab"):
        assert result[f"{side}_images_per_s"]["median"] > 0
        assert result[f"{side}_peak_mb"] > 50
    # The step's matmuls and Adam update bound it below the matmuls-only ceiling.
    assert result["matmul_and_adam_images_per_s"] < result["ceiling_images_per_s"]
    assert any(line.startswith("its matmuls and its Adam update") for line in lines)
    # Same model, same maths: after one epoch the test losses are close.
    assert abs(result["vaelab_test_loss"]["median"] - result["recipe_test_loss"]["median"]) < 25


def test_bench_revisions_runs_each_revision_from_its_own_tree(tmp_path, monkeypatch):
    import bench_revisions

    seen = []

    def fake_bench(tree, options, out):  # what a revision's bench wrote, by its tree
        seen.append((tree.name, (tree / "src" / "vaelab").is_dir(), options))
        ratio = 2.0 if tree.name == "before" else 2.2
        return {"ratio": {"median": ratio}, "recipe_images_per_s": {}, "extra": 1,
                "vaelab_images_per_s": {}, "fraction_of_ceiling": 0.5}  # fmt: skip

    monkeypatch.setattr(bench_revisions, "run_bench", fake_bench)
    out = tmp_path / "revisions.json"
    argv = ["HEAD", "HEAD", "--rounds", "2", "--pairs", "1", "--out", str(out)]
    assert bench_revisions.main(argv) == 0
    assert [(name, has_src) for name, has_src, _ in seen] == [("before", True), ("after", True)] * 2
    result = json.loads(out.read_text())
    assert result["after_over_before"]["median"] == pytest.approx(1.1)
    assert result["revisions"]["before"]["commit"] == result["revisions"]["after"]["commit"]
    assert "extra" not in result["runs"]["before"][0] and result["date"] and result["machine"]
    assert "--pairs" in seen[0][2]


def test_bench_revisions_runs_the_script_where_the_revision_has_it(tmp_path):
    import bench_revisions

    assert bench_revisions.bench_argv(tmp_path, ["--pairs", "1"])[1:4] == ["-m", "vaelab", "bench"]
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench.py").write_text("")
    assert bench_revisions.bench_argv(tmp_path, [])[1] == str(tmp_path / "benchmarks" / "bench.py")
