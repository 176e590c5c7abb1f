"""A run's figures (figures/*.png) and its self-contained report.html, computed from the run."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vaelab.data import binarize_fixed, load_dataset
from vaelab.models import Model
from vaelab.training.run import RunConfig, load_run, read_config
from vaelab.training.trainer import METRICS_FILE
from vaelab.viz.figures import (
    image_grid,
    latent_scatter_figure,
    loss_curves_figure,
    manifold_figure,
    normal_quantile_grid,
    reconstructions_figure,
    save_figure,
)
from vaelab.viz.report import Section, write_report

MANIFOLD_SIZE = 20


def objective_name(config: RunConfig, binarization: str) -> str:
    """What the loss is: a bound on -log p(x) only where p(x|z) is a likelihood of the data."""
    if config.model_config.likelihood == "bernoulli" and binarization == "none":
        return "BCE loss + KL (grayscale pixels: not a likelihood bound)"
    return "negative ELBO, nats per image"


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_set(config: RunConfig, binarization: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    data = load_dataset(config.data.dataset, config.data.data_dir)
    x = binarize_fixed(data.test_images, binarization, config.data.test_seed)
    return x, data.test_labels


@torch.no_grad()
def run_figures(
    model: Model, x: torch.Tensor, y: torch.Tensor | None, history: list[dict], class_names
) -> dict[str, object]:
    """name -> Figure for every figure that applies to this model."""
    model.eval()
    cond = y if model.config.num_classes else None
    gen = torch.Generator().manual_seed(0)
    prior_y = None if cond is None else torch.arange(64) % model.config.num_classes
    figs = {
        "reconstructions": reconstructions_figure(
            x[:10],
            model.reconstruct(x[:10], None if cond is None else cond[:10]),
            title="Test digits (odd rows) and their reconstructions (even rows)",
        ),
        "samples": image_grid(
            model.generate(64, prior_y, gen), nrow=8, title="Decoded samples from the prior"
        ),
        "latent_scatter": latent_scatter_figure(
            model.encode(x, cond).mean, y, class_names, title="Test posterior means"
        ),
    }
    if history:
        figs["loss_curves"] = loss_curves_figure(history, title="Training and test losses")
    if model.config.latent_dim == 2 and cond is None:
        grid = normal_quantile_grid(MANIFOLD_SIZE)
        decoded = model.decode(grid.to(next(model.parameters()).device)).mean
        figs["manifold"] = manifold_figure(
            decoded, MANIFOLD_SIZE, grid, title="The 2-D latent manifold at Normal quantiles"
        )
    return figs


CAPTIONS = {
    "reconstructions": "The decoder's mean at the posterior mean of each test image.",
    "samples": "Samples: z ~ p(z) decoded to the likelihood's mean.",
    "latent_scatter": "Where the test images land in latent space, coloured by label.",
    "loss_curves": "Per-epoch training (solid) and test (dashed) losses.",
    "manifold": "The decoder over a 20 x 20 grid of Normal quantiles of z (z2 up, z1 right).",
}


def summary_table(config: RunConfig, raw: dict, history: list[dict]) -> dict[str, object]:
    binarization = raw.get("binarization", config.data.binarization)
    mc = config.model_config
    table = {
        "model": config.model,
        "dataset": config.data.dataset,
        "split": raw.get("split", ""),
        "binarization": binarization,
        "net": mc.net,
        "hidden": ",".join(map(str, mc.hidden)),
        "latent dim": mc.latent_dim,
        "likelihood": mc.likelihood,
        "epochs": config.train.epochs,
        "batch size": config.train.batch_size,
        "learning rate": config.train.lr,
    }
    if history:
        last = history[-1]
        table["epochs done"] = last["epoch"]
        table[f"test {objective_name(config, binarization)}"] = last.get("test/loss")
        table["train images/s (last epoch)"] = round(last["train/samples_per_s"])
    return table


def write_run_report(run_dir: str | Path, trainer=None) -> Path:
    """Write figures/*.png and report.html for a run; reuse a live trainer's model and data."""
    run_dir = Path(run_dir)
    config, raw = read_config(run_dir)
    binarization = raw.get("binarization", config.data.binarization)
    if trainer is not None:
        model, x, y = trainer.model, trainer.test_x.cpu(), trainer.test_y
        model = model.cpu()
    else:
        _, model = load_run(run_dir)
        x, y = test_set(config, binarization)
    y = None if y is None else y.cpu()
    history = read_history(run_dir)
    figures = run_figures(model, x, y, history, None)
    sections = [
        Section(
            "Summary",
            "What was trained, on what, and how well.",
            table=summary_table(config, raw, history),
        )
    ]
    for name, fig in figures.items():
        path = save_figure(fig, run_dir / "figures" / f"{name}.png")
        sections.append(
            Section(
                name.replace("_", " ").capitalize(),
                CAPTIONS[name],
                figures=[(CAPTIONS[name], path)],
            )
        )
    sections.append(
        Section(
            "Configuration",
            "config.json of this run.",
            table={k: json.dumps(v) for k, v in config.to_json().items()},
        )
    )
    return write_report(
        run_dir / "report.html",
        f"vaelab run: {config.model} on {config.data.dataset}",
        sections,
        subtitle=str(run_dir),
    )
