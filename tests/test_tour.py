"""`vaelab tour --quick` writes every section of the lecture, in English and in Korean."""

import re

import pytest

from vaelab.cli import main
from vaelab.tour.text import EN, KO

SECTIONS = ["mle_title", "info_title", "paradox_title", "ae_vae_title", "elbo_title",
            "review_title", "aae_cvae_title"]  # fmt: skip
FIGURES = ["mle_vs_map", "shrinkage", "kl_asymmetry", "mse_paradox", "ae_vae_samples",
           "interpolation", "elbo_terms", "elbo_gap", "manifold", "mean_vs_centre",
           "distance_map", "class_means", "latent_scatter", "reconstructions", "aae_codes",
           "class_grid", "style_transfer"]  # fmt: skip


@pytest.fixture(scope="module")
def tour_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tour") / "tour"
    assert main(["tour", "--quick", "--out", str(out), "--quiet"]) == 0
    return out


def test_every_section_figure_and_number(tour_dir):
    html = (tour_dir / "report.html").read_text()
    for key in SECTIONS:
        assert EN[key] in html, key
    for name in FIGURES:
        assert (tour_dir / "figures" / f"{name}.png").is_file(), name
    assert html.count("data:image/png;base64,") == len(FIGURES)
    assert "http://" not in html and "https://" not in html
    # Every section has a table of numbers computed by the run.
    assert html.count('<table class="facts">') >= len(SECTIONS)
    for key in ("paradox_fraction", "map_vs_ridge", "centre_distance", "mean_gap",
                "cvae_slant_r", "cvae_sweep_accuracy"):  # fmt: skip
        assert re.search(re.escape(EN[key]) + r"</th><td>[-0-9.e]+", html), key


def test_the_tour_keeps_its_models_as_runs(tour_dir):
    for model in ("ae", "vae20", "vae", "aae", "cvae"):
        assert (tour_dir / "models" / model / "model.safetensors").is_file()
        assert (tour_dir / "models" / model / "report.html").is_file()
    assert main(["sample", str(tour_dir / "models" / "vae"), "--out",
                 str(tour_dir / "s.png"), "--quiet"]) == 0  # fmt: skip


def test_korean_report(tmp_path):
    out = tmp_path / "ko"
    assert main(["tour", "--quick", "--lang", "ko", "--out", str(out), "--quiet"]) == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert '<html lang="ko">' in html
    for key in SECTIONS:
        assert KO[key] in html, key


def test_every_english_text_has_a_korean_one():
    assert set(EN) == set(KO)


def test_bad_language_and_existing_tour(tour_dir, tmp_path, capsys):
    assert main(["tour", "--lang", "fr", "--out", str(tmp_path / "t")]) == 2
    assert "--lang is 'fr'" in capsys.readouterr().err
    assert main(["tour", "--out", str(tour_dir)]) == 2
    assert "already holds a tour" in capsys.readouterr().err


@pytest.mark.slow
def test_make_demo_writes_the_report(tmp_path):
    """The README's first command, with the tour's tiny budget."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "demo"
    subprocess.run(["make", "-C", str(root), "demo", f"OUT={out}", "TOUR_FLAGS=--quick --quiet"],
                   check=True, capture_output=True)  # fmt: skip
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES)
    assert (out / "models" / "vae" / "report.html").is_file()


@pytest.mark.slow
def test_the_reports_explorers_decode_as_the_models_do(tour_dir):
    """From file:// with every other request aborted: dragging on the 2-D VAE's plane decodes
    what the tour's VAE decodes there, and the CVAE's explorer decodes what the CVAE does
    under a label; the page stays small and logs no error."""
    import torch

    from browsers import launched
    from test_explorer_html import ROOT, Opened, max_error
    from vaelab.run import load_run

    assert (tour_dir / "report.html").stat().st_size < 6 * 2**20
    models = {k: load_run(tour_dir / "models" / k)[1] for k in ("vae", "aae", "cvae")}
    with launched() as chromium:
        opened = Opened(chromium, tour_dir / "report.html")
        assert opened.page.locator(ROOT).count() == 3  # the VAE, the AAE, the CVAE
        before, count = opened.canvas(f"{ROOT} canvas.vxe-image"), opened.counter("decodes")
        opened.drag(f"{ROOT} .vxe-plane", [(0.2, 0.2), (0.5, 0.6), (0.8, 0.75)])
        opened.wait_past("decodes", count)
        state = opened.state()
        assert opened.canvas(f"{ROOT} canvas.vxe-image") != before
        with torch.no_grad():
            expected = models["vae"].decode(torch.tensor([state["z"]])).mean.flatten()
            cvae = models["cvae"].decode(torch.tensor([[0.5, -0.5]]), torch.tensor([3]))
        assert max_error(state["pixels"], expected) < 1e-3
        pixels = (
            opened.page.locator(ROOT).nth(2).evaluate("(el) => el.vaelab.decode([0.5, -0.5], 3)")
        )
        assert max_error(pixels, cvae.mean.flatten()) < 1e-3
        opened.clean()
