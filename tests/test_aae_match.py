"""benchmarks/aae_match.py's statistics on codes of a known match."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from vaelab.priors import make_prior

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import aae_match  # noqa: E402


class CodesAs:
    """A stand-in for a trained AAE whose test codes are prior samples of the given labels'
    components, scaled by `scale`."""

    def __init__(self, labels, scale: float = 1.0):
        self.prior = make_prior("mixture", 2)
        generator = torch.Generator().manual_seed(5)
        self.codes = scale * self.prior.sample(len(labels), labels, generator=generator)

    def encode(self, x):
        return SimpleNamespace(mean=self.codes)


Y = torch.arange(1000) % 10


def test_codes_drawn_from_the_prior_match_it_and_sit_in_their_own_component():
    m = aae_match.match(CodesAs(Y), torch.zeros(len(Y), 1), Y)
    assert m["mmd2_by_label"] < m["mmd2_by_label_floor_q95"]  # indistinguishable at 5 %
    assert m["mmd2_marginal"] < m["mmd2_marginal_floor_q95"]
    assert m["own_component"] > 0.97
    assert m["radial_mean"] == pytest.approx(0, abs=0.1) and m["radial_std"] == pytest.approx(
        1, 0.1
    )
    assert m["tangential_std"] == pytest.approx(0.5, rel=0.1)


def test_codes_in_the_wrong_components_are_counted_but_fit_the_marginal():
    m = aae_match.match(CodesAs((Y + 1) % 10), torch.zeros(len(Y), 1), Y)
    assert m["own_component"] < 0.02  # a few fall nearer a neighbour of their component
    assert m["mmd2_marginal"] < m["mmd2_marginal_floor_q95"]
    # At the median distance (about 5) neighbouring components (2.5 apart) look alike to the
    # kernel: this MMD judges the shape of the whole code cloud, the share their assignment.
    assert m["bandwidth"] > 4


def test_codes_pulled_towards_the_centre_are_far_above_the_floor():
    m = aae_match.match(CodesAs(Y, scale=0.6), torch.zeros(len(Y), 1), Y)
    assert m["mmd2_by_label"] > 20 * m["mmd2_by_label_floor_q95"]
    assert m["mmd2_marginal"] > 20 * m["mmd2_marginal_floor_q95"]
    assert m["radial_mean"] == pytest.approx(-0.4 * 4, abs=0.1)


def test_an_unknown_setting_is_refused(capsys):
    with pytest.raises(SystemExit):
        aae_match.main(["--settings", "base,turbo"])
    assert "unknown setting(s) turbo" in capsys.readouterr().err
