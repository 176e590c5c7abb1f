"""A run's figures (figures/*.png) and its self-contained report.html, computed from the run."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vaelab.data import ImageData
from vaelab.models import Model
from vaelab.run import RunConfig, load_run, read_config, read_eval, read_history, test_set
from vaelab.samplers import DEFAULT_COMPONENTS, TrainImages, decode_codes, draw_codes
from vaelab.viz.explorer import explorer_fragment
from vaelab.viz.figures import (
    codes_over_prior_figure,
    image_grid,
    latent_scatter_figure,
    latent_traversal_figure,
    loss_curves_figure,
    manifold_figure,
    normal_quantile_grid,
    reconstructions_figure,
    save_figure,
)
from vaelab.viz.report import Section, write_report

MANIFOLD_SIZE = 20
TRAVERSAL_STEPS = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)  # standard deviations of the test codes
TRAVERSAL_ROWS = 32  # at most: the most varied dimensions of a wider latent space


def objective_name(model: Model, binarization: str) -> str:
    """What the loss is: a bound on -log p(x) only where p(x|z) is a likelihood of the data."""
    if model.config.likelihood == "bernoulli" and binarization == "none":
        return f"{model.loss_name} with BCE on grayscale pixels (not a likelihood bound)"
    return f"{model.loss_name}, nats per image"


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
    gen = torch.Generator().manual_seed(0)
    codes = model.encode(x, y).mean  # (N, D)
    figs = {
        "reconstructions": reconstructions_figure(
            x[:10],
            model.reconstruct(x[:10], None if y is None else y[:10]),
            title="Test digits (odd rows) and their reconstructions (even rows)",
        ),
        "samples": image_grid(
            model.generate(64, generator=gen), nrow=8, title="Decoded samples from the prior"
        ),
        "latent_scatter": latent_scatter_figure(
            codes, y, class_names, title="Test posterior means"
        ),
    }
    if history:
        figs["loss_curves"] = loss_curves_figure(history, title="Training and test losses")
    if model.config.latent_dim == 2 and not model.label_classes:
        grid = normal_quantile_grid(MANIFOLD_SIZE)
        decoded = model.decode(grid.to(next(model.parameters()).device)).mean
        figs["manifold"] = manifold_figure(
            decoded, MANIFOLD_SIZE, grid, title="The 2-D latent manifold at Normal quantiles"
        )
    if model.label_classes and y is not None:
        figs.update(conditional_figures(model, x, y))
    if model.config.latent_dim == 2:  # where the codes can be drawn over the prior itself
        prior_y = model.prior_labels(y) if y is not None else None
        prior = model.prior.sample(len(x), prior_y, generator=torch.Generator().manual_seed(0),
                                   device=codes.device)  # fmt: skip
        title = f"Test codes over samples of the prior, {model.prior.describe()}"
        figs["codes_over_prior"] = codes_over_prior_figure(codes, prior, y, class_names,
                                                           title=title)  # fmt: skip
    figs["latent_traversal"] = latent_traversal(model, codes, y)
    return figs


@torch.no_grad()
def latent_traversal(model: Model, codes: torch.Tensor, y: torch.Tensor | None):
    """One row per latent dimension (the TRAVERSAL_ROWS most varied, where there are more):
    z_d at its test codes' mean + TRAVERSAL_STEPS standard deviations, every other coordinate
    at the test codes' mean; a conditional model decodes under the first test image's label."""
    mean, std = codes.mean(0), codes.std(0)  # (D,)
    dims = std.argsort(descending=True)[:TRAVERSAL_ROWS].sort().values  # (R,)
    steps = torch.tensor(TRAVERSAL_STEPS, dtype=codes.dtype)  # (S,)
    z = mean.repeat(len(dims), len(steps), 1)  # (R, S, D)
    rows = torch.arange(len(dims))[:, None]
    z[rows, torch.arange(len(steps)), dims[:, None]] = mean[dims, None] + steps * std[dims, None]
    z = z.flatten(0, 1)  # (R * S, D), row-major as the figure reads
    labels = None if y is None else y[:1].expand(len(z))  # a model without labels ignores them
    title = "z_d swept over its mean +- 3 sd of the test codes"
    return latent_traversal_figure(model.decode(z, labels).mean, dims.tolist(), TRAVERSAL_STEPS,
                                   title=title)  # fmt: skip


@torch.no_grad()
def with_mixture_samples(figures: dict[str, object], run_dir: Path, model: Model,
                         train: TrainImages | None) -> dict[str, object]:  # fmt: skip
    """The figures with decoded samples of the run's fitted mixture (samplers.py) right after
    the prior's, drawn with the same seed."""
    z = draw_codes(run_dir, model, 64, "gmm", DEFAULT_COMPONENTS, torch.Generator().manual_seed(0),
                   train)  # fmt: skip
    title = f"Samples from a fitted mixture ({DEFAULT_COMPONENTS} Gaussians on the training codes)"
    grid = image_grid(decode_codes(model, z), nrow=8, title=title)
    out: dict[str, object] = {}
    for name, fig in figures.items():
        out[name] = fig
        if name == "samples":
            out["mixture_samples"] = grid
    return out


def report_train_images(trainer, data: ImageData | None, config: RunConfig) -> TrainImages | None:
    """The training images that the mixture is fitted to, where the caller holds them (None:
    the sampler loads the run's dataset if it must fit)."""
    if trainer is not None:
        labels = trainer.train_y
        return trainer.train_x.cpu(), None if labels is None else labels.cpu()
    if data is None:
        return None
    n = len(data.train_images) - config.data.validation
    return data.train_images[:n], None if data.train_labels is None else data.train_labels[:n]


CAPTIONS = {
    "reconstructions": "The decoder's mean at the posterior mean of each test image.",
    "samples": "Samples: z ~ p(z) decoded to the likelihood's mean.",
    "mixture_samples": f"Samples: z from a mixture of {DEFAULT_COMPONENTS} Gaussians (full "
    "covariances) fitted by EM to the posterior means of the training images, decoded to the "
    "likelihood's mean: what the decoder makes of where the codes are, rather than where the "
    "prior says they should be (a plain autoencoder's codes follow no prior at all). The "
    f"mixture is kept beside the run as sampler-gmm-{DEFAULT_COMPONENTS}.safetensors.",
    "latent_scatter": "Where the test images land in latent space, coloured by label.",
    "loss_curves": "Per-epoch training (solid) and test (dashed) losses.",
    "manifold": "The decoder over a 20 x 20 grid of Normal quantiles of z (z2 up, z1 right).",
    "class_grid": "The same z decoded under every label: the label says which digit, z the style.",
    "style_transfer": "Each test digit's posterior mean decoded under every label.",
    "latent_traversal": "One row per latent dimension: that coordinate swept from 3 standard "
    "deviations below to 3 above its mean over the test codes, every other coordinate at the "
    "test codes' mean (a conditional model: under the first test image's label). A row that "
    "does not change is a dimension the decoder ignores; a disentangled code changes one "
    "factor of the images per row.",
    "codes_over_prior": "The encoder's test codes (coloured by label) over samples of the "
    "model's prior p(z) (grey): where an adversarial autoencoder's discriminator or a VAE's "
    "KL term pushed them, or, for the plain autoencoder, what decoded samples come from.",
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
    # evaluation/samples.py, in the reference classifier's features; *_floor: two sets of real
    # images compared alike, what a sampler of the data itself would score
    "frechet_distance": "Frechet classifier distance (FCD), prior samples vs real images",
    "frechet_distance_floor": "FCD, real vs real images (the floor)",
    "precision": "precision of prior samples (k=3: share inside the real images' manifold)",
    "precision_floor": "precision, real vs real images",
    "recall": "recall of prior samples (k=3: share of real images inside the samples')",
    "recall_floor": "recall, real vs real images",
    "sample_quality_images": "images on each side of FCD, precision and recall",
    "sample_quality_seconds": "seconds for FCD, precision and recall",
}


def eval_section(run_dir: Path) -> Section | None:
    """The numbers of `vaelab eval`, if it has run."""
    result = read_eval(run_dir)
    if result is None:
        return None
    table = {EVAL_NAMES.get(k, k.replace("_", " ")): v for k, v in result.items()
             if not isinstance(v, list)}  # fmt: skip
    for key, values in result.items():  # a model's own per-layer or per-part numbers
        numbers = isinstance(values, list) and all(isinstance(v, int | float) for v in values)
        if numbers and key != "latent_usage_per_dim":
            table[key.replace("_", " ")] = ", ".join(f"{v:.3g}" for v in values)
    usage = result.get("latent_usage_per_dim")
    if isinstance(usage, list) and all(isinstance(v, int | float) for v in usage):
        what = str(result.get("latent_usage_measure", "usage"))
        table[f"per latent dimension: {what}"] = ", ".join(f"{v:.2f}" for v in usage)
    text = (f"Computed by vaelab eval on the {result['split']} split with k={result['k']} "
            "importance samples.")  # fmt: skip
    return Section("Evaluation", text, table=table)


def explorer_plane(model: Model, x: torch.Tensor, y: torch.Tensor | None) -> tuple[int, int]:
    """The two latent dimensions an explorer's plane shows: the two most used by the model's
    latent summary (both of a 2-D latent)."""
    if model.config.latent_dim == 2:
        return (0, 1)
    top = torch.topk(model.latent_summary(x, y).scores, 2).indices.tolist()
    return top[0], top[1]


EXPLORER_TEXT = (
    "The decoder runs in this page: drag on the plane (or use the arrow keys) to decode a "
    "point, move the sliders for the other dimensions, pick two points to interpolate, draw "
    "a digit to encode it. Nothing leaves the file."
)


@torch.no_grad()
def explorer_section(model: Model, x: torch.Tensor, y: torch.Tensor | None, class_names,
                     lang: str = "en", embed_encoder: bool = True,
                     title: str = "Latent explorer") -> Section:  # fmt: skip
    """The in-page latent explorer over the test codes, or a note where the model's nets alone
    do not make its decoder (Model.portable_nets) or its latent is 1-D."""
    if not model.portable_nets or model.config.latent_dim < 2:
        why = ("its encode or decode is more than its two nets (several stochastic layers, a "
               "flow or a codebook)" if not model.portable_nets
               else "its latent space is 1-D")  # fmt: skip
        return Section(title, f"No in-page explorer for this model: {why}; vaelab serve RUN "
                              "explores it in the browser.")  # fmt: skip
    codes = model.encode(x, y).mean
    fragment = explorer_fragment(model, codes, y, class_names, explorer_plane(model, x, y),
                                 lang=lang, embed_encoder=embed_encoder)  # fmt: skip
    return Section(title, EXPLORER_TEXT, html=fragment)


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
    history, evaluation = read_history(run_dir), eval_section(run_dir)  # refused before drawing
    figures = run_figures(model, x, y, history, class_names)
    figures = with_mixture_samples(figures, run_dir, model,
                                   report_train_images(trainer, data, config))  # fmt: skip
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
    sections.append(explorer_section(model, x, y, class_names))
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
