"""A run's figures (figures/*.png) and its self-contained report.html, computed from the run."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vaelab.data import ImageData, binarize_fixed
from vaelab.evaluation.run_eval import EVAL_FILE
from vaelab.models import Model
from vaelab.training.run import RunConfig, load_run, read_config
from vaelab.training.trainer import METRICS_FILE
from vaelab.viz.figures import (
    codes_over_prior_figure,
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


def objective_name(model: Model, binarization: str) -> str:
    """What the loss is: a bound on -log p(x) only where p(x|z) is a likelihood of the data."""
    if model.config.likelihood == "bernoulli" and binarization == "none":
        return f"{model.loss_name} with BCE on grayscale pixels (not a likelihood bound)"
    return f"{model.loss_name}, nats per image"


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_set(config: RunConfig, binarization: str, data: ImageData | None = None):
    """The run's test images (binarized as in training), labels and class names (from `data`,
    the run's dataset, where the caller has it loaded)."""
    data = config.data.load() if data is None else data
    x = binarize_fixed(data.test_images, binarization, config.data.test_seed)
    return x, data.test_labels, data.class_names


@torch.no_grad()
def conditional_figures(model: Model, x: torch.Tensor, y: torch.Tensor) -> dict[str, object]:
    """Class-by-style grid (rows: labels, columns: one z each) and style transfer."""
    classes = model.config.num_classes
    z = model.sample_prior(10, torch.Generator().manual_seed(1))  # (10, D): one style a column
    labels = torch.arange(classes).repeat_interleave(10)  # (classes * 10,)
    grid = model.decode(z.repeat(classes, 1), labels).mean
    style = model.encode(x[:8], y[:8]).mean  # (8, D): the styles of 8 test digits
    rows = [torch.cat([x[i : i + 1], model.decode(style[i].expand(classes, -1),
                                                  torch.arange(classes)).mean])
            for i in range(len(style))]  # fmt: skip
    return {
        "class_grid": image_grid(grid, nrow=10, title="Rows: the label; columns: one z each"),
        "style_transfer": image_grid(
            torch.cat(rows),
            nrow=classes + 1,
            title="A test digit (left), its style decoded under every label",
        ),  # fmt: skip
    }


@torch.no_grad()
def run_figures(
    model: Model, x: torch.Tensor, y: torch.Tensor | None, history: list[dict], class_names
) -> dict[str, object]:
    """name -> Figure for every figure that applies to this model."""
    model.eval()
    cond = y if model.conditional else None
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
    if cond is not None:
        figs.update(conditional_figures(model, x, cond))
    if hasattr(model, "prior"):  # a model with a sampled prior of its own (the AAE)
        prior_y = y if getattr(model.config, "label_prior", False) else None
        prior = model.prior.sample(len(x), prior_y, generator=torch.Generator().manual_seed(0))
        figs["codes_over_prior"] = codes_over_prior_figure(
            model.encode(x).mean, prior, y, class_names, title="Test codes over prior samples"
        )
    return figs


CAPTIONS = {
    "reconstructions": "The decoder's mean at the posterior mean of each test image.",
    "samples": "Samples: z ~ p(z) decoded to the likelihood's mean.",
    "latent_scatter": "Where the test images land in latent space, coloured by label.",
    "loss_curves": "Per-epoch training (solid) and test (dashed) losses.",
    "manifold": "The decoder over a 20 x 20 grid of Normal quantiles of z (z2 up, z1 right).",
    "class_grid": "The same z decoded under every label: the label says which digit, z the style.",
    "style_transfer": "Each test digit's posterior mean decoded under every label.",
    "codes_over_prior": "The encoder's test codes (coloured by label) over samples of the "
    "prior (grey) that the discriminator pushed them towards.",
}


def summary_table(
    config: RunConfig, raw: dict, history: list[dict], model: Model
) -> dict[str, object]:
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
        scored = [r for r in history if "test/loss" in r]  # --test-every may skip epochs
        if scored:
            tested = scored[-1]
            when = "" if tested is last else f" (epoch {tested['epoch']})"
            table[f"test {objective_name(model, binarization)}{when}"] = tested["test/loss"]
            table.update({f"test {k[5:]}{when}": v for k, v in tested.items()
                          if k.startswith("test/") and k != "test/loss"})  # fmt: skip
        table["train images/s (last epoch)"] = round(last["train/samples_per_s"])
    return table


EVAL_NAMES = {  # eval.json key -> what the report calls it (nats per image unless said)
    "neg_elbo": "negative ELBO",
    "neg_iwae_1": "negative IWAE bound, k=1",
    "neg_iwae_5": "negative IWAE bound, k=5",
    "neg_iwae_50": "negative IWAE bound, k=50",
    "nll": "negative log-likelihood (importance sampled)",
    "nll_se": "its standard error over images",
    "bits_per_dim": "bits per dimension",
    "recon": "reconstruction -log p(x|z = posterior mean)",
    "bce_neg_elbo": "BCE loss + KL (grayscale: not a likelihood bound)",
    "bce_recon": "reconstruction BCE loss (grayscale: not a likelihood)",
    "active_units": "active units (Cov_x E[z_u] > 0.01)",
    "linear_probe_accuracy": "linear-probe accuracy of posterior means",
    "knn_accuracy": "5-NN accuracy of posterior means",
    "classifier_test_accuracy": "reference classifier on real test images",
    "prior_sample_confidence": "reference classifier's confidence on prior samples",
    "conditional_sample_accuracy": "reference classifier on conditional samples",
    "is_seconds": "seconds for the importance-sampled estimate",
}


def eval_section(run_dir: Path) -> Section | None:
    """The numbers of `vaelab eval`, if it has run."""
    path = run_dir / EVAL_FILE
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    table = {EVAL_NAMES.get(k, k.replace("_", " ")): v for k, v in result.items()
             if not isinstance(v, list)}  # fmt: skip
    if "kl_per_dim" in result:
        table["KL per latent dimension"] = ", ".join(f"{v:.2f}" for v in result["kl_per_dim"])
    text = (f"Computed by vaelab eval on the {result['split']} split with k={result['k']} "
            "importance samples.")  # fmt: skip
    return Section("Evaluation", text, table=table)


def write_run_report(run_dir: str | Path, trainer=None, data: ImageData | None = None) -> Path:
    """Write figures/*.png and report.html for a run; reuse a live trainer's model and data, or
    the run's dataset where the caller has it loaded."""
    run_dir = Path(run_dir)
    config, raw = read_config(run_dir)
    binarization = raw.get("binarization", config.data.binarization)
    if trainer is not None:
        model, x, y = trainer.model.cpu(), trainer.test_x.cpu(), trainer.test_y
        class_names = trainer.class_names
    else:
        _, model = load_run(run_dir)
        x, y, class_names = test_set(config, binarization, data)
    y = None if y is None else y.cpu()
    history = read_history(run_dir)
    figures = run_figures(model, x, y, history, class_names)
    sections = [
        Section(
            "Summary",
            "What was trained, on what, and how well.",
            table=summary_table(config, raw, history, model),
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
    evaluation = eval_section(run_dir)
    if evaluation is not None:
        sections.insert(1, evaluation)
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
