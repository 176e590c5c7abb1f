"""MIG and DCI on synthetic codes with known answers, and `vaelab eval` writing them."""

import json
import math

import pytest
import torch

from vaelab.cli import main
from vaelab.data import shapes
from vaelab.errors import VaelabError
from vaelab.evaluation.disentanglement import (
    dci,
    discretize_factors,
    entropy,
    eval_numbers,
    mig,
    mutual_information,
)
from vaelab.evaluation.morphometrics import MEASURES

N = 4000
GRID = (4, 6, 10, 16, 16)  # values per factor, each at most the 20 code bins: MIG can reach 1


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def factors():
    """(N, 5) factor values on a grid, drawn independently."""
    g = gen()
    return torch.stack([torch.randint(0, k, (N,), generator=g) / (k - 1) for k in GRID], 1)


def disentangled(factors, noise_dims=5):
    """Each factor in a code dimension of its own (plus a little noise), then pure noise."""
    g = gen(1)
    own = factors + 0.002 * torch.randn(factors.shape, generator=g)
    return torch.cat([own, torch.randn(len(factors), noise_dims, generator=g)], 1)


def test_mutual_information_closed_forms():
    g = gen(2)
    a = torch.randint(0, 8, (20000, 1), generator=g)
    b = torch.randint(0, 8, (20000, 1), generator=g)
    assert entropy(a).item() == pytest.approx(math.log(8), abs=0.01)
    assert mutual_information(a, a).item() == pytest.approx(entropy(a).item(), abs=1e-9)
    assert mutual_information(a, b).item() < 0.01  # independent: only the estimator's bias
    half = a // 2  # a function of a with 4 values: I(a; a // 2) = H(a // 2) = log 4
    assert mutual_information(a, half).item() == pytest.approx(math.log(4), abs=0.01)


def test_factors_with_few_values_stay_discrete_and_others_are_binned():
    values = torch.stack([torch.arange(1000) % 40 * 0.1, torch.linspace(0, 1, 1000)], 1)
    classes = discretize_factors(values)
    assert classes[:, 0].unique().numel() == 40  # 40 distinct values: taken as they are
    assert classes[:, 1].unique().numel() == 20  # continuous: 20 equal-width bins


def test_a_disentangled_code_scores_near_one(factors):
    codes = disentangled(factors)
    m, d = mig(codes, factors), dci(codes, factors)
    assert m.score > 0.95 and (m.per_factor > 0.9).all()
    assert d.disentanglement > 0.95 and d.completeness > 0.95 and d.informativeness > 0.95
    # The importance sits on the diagonal: code k for factor k, the noise dimensions idle.
    assert torch.equal(d.importance.argmax(0), torch.arange(5))
    assert d.importance[5:].sum() < 0.01 * d.importance.sum()


def test_codes_shuffled_across_samples_score_near_zero(factors):
    codes = disentangled(factors)[torch.randperm(N, generator=gen(3))]
    m, d = mig(codes, factors), dci(codes, factors)
    assert m.score < 0.02
    assert d.disentanglement < 0.1 and d.informativeness < 0.05


def test_a_rotated_code_is_entangled(factors):
    codes = disentangled(factors, noise_dims=0)
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, generator=gen(4)))
    entangled = (codes - codes.mean(0)) / codes.std(0) @ rotation
    m, d = mig(entangled, factors), dci(entangled, factors)
    assert m.score < 0.25 and d.disentanglement < 0.5
    assert d.informativeness > 0.8  # the information is all there, spread over the codes


def test_a_factor_in_two_codes_has_no_gap_and_half_completeness(factors):
    codes = disentangled(factors, noise_dims=0)
    twice = torch.cat([codes, codes + 0.002 * torch.randn(codes.shape, generator=gen(5))], 1)
    m, d = mig(twice, factors), dci(twice, factors)
    assert m.score < 0.1  # the two best codes tie: the gap closes
    assert d.disentanglement > 0.95  # still one factor per code
    # Each factor's importance split evenly over 2 of 10 codes: 1 - log 2 / log 10.
    assert d.completeness == pytest.approx(1 - math.log(2) / math.log(10), abs=0.05)


def test_bad_shapes_are_one_error():
    with pytest.raises(VaelabError, match="same N"):
        mig(torch.zeros(10, 3), torch.zeros(9, 2))
    with pytest.raises(VaelabError, match="2 code dimensions"):
        dci(torch.zeros(50, 1), torch.zeros(50, 2))


def test_digits_get_morphometric_factors(small_data):
    codes = torch.randn(len(small_data.test_images), 4, generator=gen(6))
    out = eval_numbers(codes, small_data, "test", None)
    assert out["factors_morphometrics"] == ", ".join(MEASURES)
    assert len(out["mig_morphometrics_per_factor"]) == len(MEASURES)
    assert 0 <= out["mig_morphometrics"] < 0.2  # random codes know nothing of the digits
    assert eval_numbers(codes[:, :1], small_data, "test", None) == {}  # no gap with one code


def test_shapes_get_their_true_factors(tmp_path):
    data = shapes.load_shapes(shapes.ShapesSpec(train=64, test=400, seed=2), data_dir=tmp_path)
    codes = torch.cat([data.test_factors[:, [3, 4, 1]], torch.randn(400, 2, generator=gen(7))], 1)
    out = eval_numbers(codes, data, "test", None)
    assert out["factors_true_factors"] == "shape, scale, rotation, x, y"
    shape, scale, rotation, x, y = out["mig_true_factors_per_factor"]
    # x, y and scale are held exactly by codes 1, 2 and 3 (x and y have 32 values, more than
    # the 20 code bins can tell apart: their gap stays under 1); shape and rotation by none.
    assert scale > 0.9 and min(x, y) > 0.6 and max(shape, rotation) < 0.1
    train = eval_numbers(codes[:32], data, "train", 32)
    assert len(train["mig_true_factors_per_factor"]) == 5


@pytest.mark.slow
def test_vaelab_eval_on_shapes_writes_mig_and_dci(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(shapes, "DEFAULT", shapes.ShapesSpec(train=256, test=128, seed=1))
    run = tmp_path / "run"
    argv = ["train", "vae", "--dataset", "shapes", "--hidden", "32", "--latent-dim", "3",
            "--max-steps", "2", "--out", str(run), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert (run / "figures" / "latent_traversal.png").is_file()
    assert main(["eval", str(run), "--k", "2", "--quiet"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["factors_true_factors"] == "shape, scale, rotation, x, y"
    assert 0 <= result["mig_true_factors"] <= 1
    assert len(result["mig_true_factors_per_factor"]) == 5
    for key in ("disentanglement", "completeness"):
        assert 0 <= result[f"dci_{key}_true_factors"] <= 1
    assert "mig true factors" in (run / "report.html").read_text()
