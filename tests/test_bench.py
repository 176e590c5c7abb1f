"""`vaelab bench`: the FLOP count against torch's own counter, and the command end to end."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vaelab import bench
from vaelab.bench_recipe import VAE, loss_function
from vaelab.cli import main


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


@pytest.mark.slow
def test_bench_quick_prints_the_ratio(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
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
