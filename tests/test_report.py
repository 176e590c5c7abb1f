"""The HTML report: self-contained, escaped, with a table of contents that links."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from vaelab.errors import VaelabError
from vaelab.viz import (
    Section,
    figure_to_png,
    format_value,
    image_grid,
    render_report,
    save_figure,
    write_report,
)

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def png() -> bytes:
    return figure_to_png(image_grid(torch.rand(4, 1, 8, 8), nrow=2), dpi=40)


def _sections(png: bytes, tmp_path) -> list[Section]:
    path = save_figure(image_grid(torch.rand(2, 3, 8, 8), nrow=2), tmp_path / "grid.png")
    return [
        Section("Intro", text="First paragraph.\n\nSecond & last."),
        Section("Samples", figures=[("bytes figure", png), ("path figure", path)]),
        Section("Numbers", table={"NLL": 85.123456, "seed": 3}, figures=[("again", png)]),
        Section("Intro", html="<p class='x'>trusted</p>"),
    ]


def test_report_embeds_every_figure_and_links_nothing_outside(png, tmp_path):
    page = render_report("Run", _sections(png, tmp_path), subtitle="a VAE")
    assert page.count("data:image/png;base64,") == 3
    for external in ("http://", "https://", 'src="//', 'href="//', "@import", "url("):
        assert external not in page
    assert page.count("<p>") == 2 and "Second &amp; last." in page
    assert "<p class='x'>trusted</p>" in page


def test_toc_anchors_match_unique_section_ids(png, tmp_path):
    page = render_report("Run", _sections(png, tmp_path))
    links = re.findall(r'<a href="#([^"]+)">', page)
    ids = re.findall(r'<section id="([^"]+)">', page)
    assert links == ids and len(set(ids)) == 4


def test_everything_is_escaped():
    section = Section(EVIL, text=EVIL, table={EVIL: EVIL})
    page = render_report(EVIL, [section], subtitle=EVIL)
    assert "<script>" not in page
    assert page.count("&lt;script&gt;") == 8  # title, h1, subtitle, toc, h2, text, key, value


def test_float_formatting():
    assert format_value(85.123456) == "85.123"
    assert format_value(160.456) == "160.46"
    assert format_value(0.012345) == "0.0123"
    assert format_value(1.5e-5) == "1.500e-05"
    assert format_value(np.float32(0.5)) == "0.5000"
    assert format_value(torch.tensor(2.0)) == "2.000"
    assert format_value(12) == "12" and format_value(True) == "True"
    assert format_value(float("nan")) == "nan" and format_value(0.0) == "0"


def test_non_png_figure_is_refused():
    with pytest.raises(VaelabError, match="not a PNG"):
        render_report("Run", [Section("A", figures=[("bad", b"GIF89a")])])


def test_write_report_is_atomic_utf8(png, tmp_path):
    out = write_report(
        tmp_path / "run" / "report.html", "Résumé", [Section("A", figures=[("f", png)])]
    )
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "Résumé" in out.read_text(encoding="utf-8")
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]


def test_the_summary_quotes_the_last_epoch_that_scored_the_test_set():
    from conftest import tiny_config
    from vaelab.models import build_model
    from vaelab.run import DataConfig, RunConfig, TrainConfig
    from vaelab.viz.run_report import summary_table

    config = RunConfig("vae", tiny_config("vae"), DataConfig(), TrainConfig(test_every=2))
    model = build_model("vae", config.model_config)
    row = {"train/samples_per_s": 1000.0, "train/loss": 150.0}
    history = [{**row, "epoch": 2, "test/loss": 140.0, "test/kl": 3.0}, {**row, "epoch": 3}]
    table = summary_table(config, {}, history, model)
    assert table["epochs done"] == 3
    name = "test negative ELBO, nats per image"
    assert table[f"{name} (epoch 2)"] == 140.0 and table["test kl (epoch 2)"] == 3.0
    history.append({**row, "epoch": 4, "test/loss": 130.0})
    assert summary_table(config, {}, history, model)[name] == 130.0
    assert not any(k.startswith("test") for k in summary_table(config, {}, [row | {"epoch": 1}],
                                                                model))  # fmt: skip
