"""`vaelab tour`: every idea of the VAE lecture, computed on real digits, in one report.

The tour trains a 2-D AE, VAE, AAE and CVAE on the shipped MNIST sample with the one trainer
(their runs stay under OUT/models/ for `vaelab serve`), then writes OUT/report.html: for each
idea the claim, the figure and the number, all computed here and now.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vaelab.data import ImageData, binarize_fixed, load_dataset
from vaelab.errors import VaelabError
from vaelab.evaluation import morphometrics
from vaelab.evaluation.classifier import Classifier, reference_classifier, train_classifier
from vaelab.evaluation.likelihood import elbo, iwae_bound
from vaelab.evaluation.samples import median_bandwidth, mmd2
from vaelab.models import MODELS, Batch
from vaelab.run import DataConfig, RunConfig, TrainConfig
from vaelab.tour.text import LANGUAGES, TEXT
from vaelab.training.trainer import Trainer, train
from vaelab.viz import figures as F
from vaelab.viz.explorer import explorer_fragment
from vaelab.viz.report import Section, write_report
from vaelab.viz.run_report import conditional_figures, write_run_report

TOUR_MODELS = {  # name -> (registered model, config changes)
    "ae": ("ae", {"latent_dim": 20}),  # AE vs VAE at 20-D: the AE's codes ignore N(0, I)
    "vae20": ("vae", {"latent_dim": 20}),
    "vae": ("vae", {"latent_dim": 2}),  # the 2-D VAE of the review: its manifold, its ELBO
    # Label-aware (Makhzani et al. Fig. 4): class c's codes are matched to the mixture's part c.
    "aae": ("aae", {"latent_dim": 2, "prior": "mixture", "label_prior": True}),
    "cvae": ("cvae", {"latent_dim": 2, "num_classes": 10}),
}


@dataclass
class TourBudget:
    epochs: int = 20
    train_images: int | None = None  # None: all 9,000
    importance_samples: int = 2000
    gap_images: int = 300
    classifier_epochs: int | None = None  # None: the cached reference classifier

    @classmethod
    def quick(cls) -> TourBudget:
        return cls(epochs=2, train_images=2000, importance_samples=100, gap_images=50,
                   classifier_epochs=1)  # fmt: skip


class Tour:
    """Holds the data, the trained models and the figure folder while sections are built."""

    def __init__(self, out: Path, budget: TourBudget, lang: str, quiet: bool):
        if lang not in LANGUAGES:
            raise VaelabError(f"--lang is {lang!r}: expected one of {', '.join(LANGUAGES)}")
        self.out, self.budget, self.quiet = out, budget, quiet
        self.t = TEXT[lang]
        self.ft = TEXT["en"]  # figure text: matplotlib's default font has no Hangul
        self.lang = lang
        self.data = subset(load_dataset("mnist-sample"), budget.train_images)
        self.x_test = binarize_fixed(self.data.test_images, "dynamic", 777)
        self.y_test = self.data.test_labels
        self.gray_test = self.data.test_images.float() / 255
        self.trainers: dict[str, Trainer] = {}
        self.threads = None  # a ThreadGovernor for the trainings, or None

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def figure(self, name: str, fig) -> Path:
        return F.save_figure(fig, self.out / "figures" / f"{name}.png")

    def train_models(self) -> None:
        for key, (name, changes) in TOUR_MODELS.items():
            self.say(self.t["training"].format(model=key, latent=changes["latent_dim"]))
            fields = {"image_shape": self.data.image_shape, **changes}
            config = RunConfig(model=name, model_config=MODELS[name].config_class(**fields),
                               data=DataConfig(dataset="mnist-sample"),
                               train=TrainConfig(epochs=self.budget.epochs))  # fmt: skip
            run_dir = self.out / "models" / key
            self.trainers[key] = train(config, run_dir, quiet=True, data=self.data,
                                       threads=self.threads)  # fmt: skip
            write_run_report(run_dir, trainer=self.trainers[key])  # its own report, for serve
            self.trainers[key].model.eval()

    def model(self, key: str):
        return self.trainers[key].model

    def classifier(self) -> Classifier:
        if self.budget.classifier_epochs is None:
            return reference_classifier(self.data.train_images, self.data.train_labels,
                                        "mnist-sample")  # fmt: skip
        return train_classifier(self.data.train_images, self.data.train_labels,
                                self.budget.classifier_epochs)  # fmt: skip


@torch.no_grad()
def explorer(tour: Tour, key: str, title: str, encoder: bool = False) -> str:
    """The in-page explorer of the tour's 2-D model `key` over its test codes (the decoder, and
    with `encoder` the encoder too, run in the page: no server)."""
    model = tour.model(key)
    codes = model.encode(tour.x_test, tour.y_test).mean
    return explorer_fragment(model, codes, tour.y_test, lang=tour.lang, title=title,
                             embed_encoder=encoder)  # fmt: skip


def subset(data: ImageData, n: int | None) -> ImageData:
    if n is None:
        return data
    return ImageData(name=data.name, train_images=data.train_images[:n],
                     train_labels=data.train_labels[:n], test_images=data.test_images,
                     test_labels=data.test_labels, source=data.source,
                     split=f"first {n} of the training split; test split unchanged",
                     num_classes=data.num_classes, class_names=data.class_names)  # fmt: skip


# -- AE vs VAE -----------------------------------------------------------------------------
@torch.no_grad()
def interpolation(model, a: torch.Tensor, b: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Decode the straight line between the codes of images a and b: (steps, C, H, W)."""
    za, zb = model.encode(a[None]).mean[0], model.encode(b[None]).mean[0]
    w = torch.linspace(0, 1, steps)[:, None]
    return model.decode((1 - w) * za + w * zb).mean


@torch.no_grad()
def prior_sample_confidence(model, clf: Classifier, n: int = 1000) -> tuple[float, float]:
    """The classifier's mean top probability on decoded prior samples, and the share above 0.9."""
    probs = clf.predict_proba(model.generate(n, generator=torch.Generator().manual_seed(0)))
    top = probs.max(1).values
    return top.mean().item(), (top > 0.9).float().mean().item()


def ae_vs_vae(tour: Tour, clf: Classifier) -> Section:
    t, ae, vae = tour.t, tour.model("ae"), tour.model("vae20")
    gen = torch.Generator().manual_seed(0)
    samples = torch.cat([ae.generate(16, generator=gen), vae.generate(16, generator=gen)])
    conf = {k: prior_sample_confidence(tour.model(k), clf) for k in ("ae", "vae20")}
    i, j = first_of(tour.y_test, 1), first_of(tour.y_test, 7)
    strips = torch.cat([interpolation(m, tour.x_test[i], tour.x_test[j]) for m in (ae, vae)])
    figs = [
        (t["ae_vae_samples_caption"], tour.figure("ae_vae_samples", F.image_grid(
            samples, nrow=16, title=tour.ft["ae_vae_samples_title"]))),
        (t["interpolation_caption"], tour.figure("interpolation", F.image_grid(
            strips, nrow=10, title=tour.ft["interpolation_title"]))),
    ]  # fmt: skip
    table = {
        t["ae_confidence"]: conf["ae"][0],
        t["vae_confidence"]: conf["vae20"][0],
        t["ae_confident_share"]: conf["ae"][1],
        t["vae_confident_share"]: conf["vae20"][1],
    }
    return Section(t["ae_vae_title"], t["ae_vae_text"], figures=figs, table=table)


def first_of(labels: torch.Tensor, digit: int) -> int:
    return int((labels == digit).nonzero()[0])


# -- the ELBO ------------------------------------------------------------------------------
@torch.no_grad()
def elbo_gap(model, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: the ELBO (averaged over 20 draws) and log p(x) by k importance samples."""
    torch.manual_seed(0)
    elbos = torch.stack([elbo(model, x) for _ in range(20)]).mean(0)
    return elbos, iwae_bound(model, x, k=k)


def elbo_section(tour: Tour) -> Section:
    t, vae, b = tour.t, tour.model("vae"), tour.budget
    elbos, log_px = elbo_gap(vae, tour.x_test[: b.gap_images], b.importance_samples)
    gap = log_px - elbos
    history = tour.trainers["vae"].state.history
    keys = ["train/recon", "test/recon", "train/kl", "test/kl"]
    figs = [(t["elbo_terms_caption"], tour.figure("elbo_terms", F.loss_curves_figure(
                history, keys=keys, title=tour.ft["elbo_terms_title"]))),
            (t["elbo_gap_caption"], tour.figure("elbo_gap", histogram(
                gap, tour.ft["elbo_gap_title"], tour.ft["elbo_gap_xlabel"])))]  # fmt: skip
    table = {
        t["mean_elbo"]: elbos.mean().item(),
        t["mean_log_px"]: log_px.mean().item(),
        t["mean_gap"]: gap.mean().item(),
        t["k_used"]: b.importance_samples,
    }
    return Section(t["elbo_title"], t["elbo_text"], figures=figs, table=table)


def histogram(values: torch.Tensor, title: str, xlabel: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(values.numpy(), bins=30, color="#4c72b0")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    return fig


# -- the MNIST review ----------------------------------------------------------------------
@torch.no_grad()
def manifold_distances(vae, mean_image: torch.Tensor, n: int = 20):
    """The decoded 20x20 manifold, its grid, and each cell's L2 distance to the mean image."""
    grid = F.normal_quantile_grid(n)
    decoded = vae.decode(grid).mean  # (n*n, C, H, W), row-major, z2 falling down the rows
    dist = (decoded - mean_image).flatten(1).norm(dim=1).view(n, n)
    return decoded, grid, dist


@torch.no_grad()
def class_means(vae, tour: Tour) -> torch.Tensor:
    """Per class: the mean test image, and the decoded mean of the class's codes (2 rows)."""
    codes = vae.encode(tour.x_test).mean
    labels = tour.y_test
    means = torch.stack([tour.gray_test[labels == c].mean(0) for c in range(10)])
    decoded = vae.decode(torch.stack([codes[labels == c].mean(0) for c in range(10)])).mean
    return torch.cat([means, decoded])


def review_section(tour: Tour) -> Section:
    t, vae, n = tour.t, tour.model("vae"), 20
    mean_image = tour.data.train_images.float().mean(0) / 255
    decoded, grid, dist = manifold_distances(vae, mean_image, n)
    centre = vae.decode(torch.zeros(1, 2)).mean[0]
    centre_dist = (centre - mean_image).norm().item()
    corners = dist[[0, 0, -1, -1], [0, -1, 0, -1]].mean().item()
    ticks = grid[:n, 0].tolist()
    figs = [
        (t["manifold_caption"], tour.figure("manifold", F.manifold_figure(
            decoded, n, grid, title=tour.ft["manifold_title"]))),
        (t["mean_vs_centre_caption"], tour.figure("mean_vs_centre", F.image_grid(
            torch.stack([mean_image, centre]), nrow=2, cell_inches=1.4,
            title=tour.ft["mean_vs_centre_title"]))),
        (t["distance_map_caption"], tour.figure("distance_map", F.heatmap_figure(
            dist, tour.ft["distance_map_title"], ticks, tour.ft["distance_label"]))),
        (t["class_means_caption"], tour.figure("class_means", F.image_grid(
            class_means(vae, tour), nrow=10, title=tour.ft["class_means_title"]))),
        (t["scatter_caption"], tour.figure("latent_scatter", F.latent_scatter_figure(
            vae.encode(tour.x_test).mean, tour.y_test, title=tour.ft["scatter_title"]))),
        (t["recon_caption"], tour.figure("reconstructions", F.reconstructions_figure(
            tour.x_test[:10], vae.reconstruct(tour.x_test[:10]), title=tour.ft["recon_title"]))),
    ]  # fmt: skip
    row, col = divmod(int(dist.argmin()), n)
    table = {
        t["centre_distance"]: centre_dist,
        t["corner_distance"]: corners,
        t["min_distance"]: dist.min().item(),
        t["min_cell"]: f"z = ({grid[row * n + col, 0]:.2f}, {grid[row * n + col, 1]:.2f})",
    }
    page = explorer(tour, "vae", t["vae_explorer_title"], encoder=True)
    return Section(t["review_title"], t["review_text"], figures=figs, table=table, html=page)


# -- AAE and CVAE --------------------------------------------------------------------------
STYLE_SWEEP = 100  # z's decoded under each fixed label


def linear_fit_r(z: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """R of the least-squares fit values ~ a + z b, per column of values (N, L): (L,); rows
    with a missing value (a blank image's NaN) are left out of their column's fit."""
    rs = []
    for column in values.T:
        keep = ~column.isnan()
        x = torch.cat([torch.ones(int(keep.sum()), 1), z[keep]], dim=1).double()
        y = column[keep].double()
        residual = y - x @ torch.linalg.lstsq(x, y[:, None]).solution[:, 0]
        rs.append((1 - residual.var() / y.var().clamp_min(1e-12)).clamp_min(0).sqrt())
    return torch.stack(rs).float()


@torch.no_grad()
def cvae_style(t: dict, cvae, clf: Classifier) -> dict[str, float]:
    """Does the CVAE's z carry the style? The same STYLE_SWEEP prior draws of z decoded under
    each label in turn, the decoded digits' slant and thickness measured (Morpho-MNIST): how
    much of each a linear function of z explains while the label stays fixed, and whether the
    classifier still reads the fixed label."""
    classes = cvae.label_classes
    z = cvae.sample_prior(STYLE_SWEEP, torch.Generator().manual_seed(2))  # (G, D)
    labels = torch.arange(classes).repeat_interleave(STYLE_SWEEP)  # (L * G,)
    digits = cvae.decode(z.repeat(classes, 1), labels).mean
    measured = morphometrics.measure(digits)
    slant = measured.slant.view(classes, STYLE_SWEEP).T.rad2deg()  # (G, L) degrees
    thickness = measured.thickness.view(classes, STYLE_SWEEP).T
    spread = slant.nanquantile(0.95, 0) - slant.nanquantile(0.05, 0)  # (L,)
    return {
        t["cvae_slant_r"]: linear_fit_r(z, slant).mean().item(),
        t["cvae_thickness_r"]: linear_fit_r(z, thickness).mean().item(),
        t["cvae_slant_spread"]: spread.nanmean().item(),
        t["cvae_sweep_accuracy"]: clf.accuracy(digits, labels),
    }


@torch.no_grad()
def aae_cvae_section(tour: Tour, clf: Classifier) -> Section:
    t, aae, cvae = tour.t, tour.model("aae"), tour.model("cvae")
    codes = aae.encode(tour.x_test).mean
    gen, parts = torch.Generator().manual_seed(0), aae.prior_labels(tour.y_test)
    prior = aae.prior.sample(len(codes), parts, generator=gen)
    again = aae.prior.sample(len(codes), parts, generator=gen)  # the floor: prior vs prior
    bandwidth = median_bandwidth(codes, prior)
    torch.manual_seed(0)
    disc_acc = aae.evaluate(Batch(tour.x_test, tour.y_test))["disc_acc"].item()
    figs = [(t["aae_caption"], tour.figure("aae_codes", F.codes_over_prior_figure(
        codes, prior, tour.y_test, title=tour.ft["aae_title"])))]  # fmt: skip
    cond = conditional_figures(cvae, tour.x_test, tour.y_test)
    figs += [
        (t["class_grid_caption"], tour.figure("class_grid", cond["class_grid"])),
        (t["style_caption"], tour.figure("style_transfer", cond["style_transfer"])),
    ]
    labels = torch.arange(1000) % 10
    samples = cvae.generate(1000, labels, torch.Generator().manual_seed(0))
    table = {t["cvae_accuracy"]: clf.accuracy(samples, labels), t["disc_accuracy"]: disc_acc,
             t["aae_mmd"]: mmd2(codes, prior, bandwidth),
             t["aae_mmd_floor"]: mmd2(again, prior, bandwidth),
             t["aae_mmd_bandwidth"]: bandwidth}  # fmt: skip
    table.update(cvae_style(t, cvae, clf))
    pages = explorer(tour, "aae", t["aae_explorer_title"]) + explorer(
        tour, "cvae", t["cvae_explorer_title"]
    )
    return Section(t["aae_cvae_title"], t["aae_cvae_text"], figures=figs, table=table, html=pages)


def run_tour(out: str | Path = "runs/tour", quick: bool = False, lang: str = "en",
             quiet: bool = False, threads=None) -> Path:  # fmt: skip
    """Train the tour's models and write OUT/report.html; returns the report's path.
    `threads`: a training.threads.ThreadGovernor that sets torch's threads while they train."""
    out = Path(out)
    tour = Tour(out, TourBudget.quick() if quick else TourBudget(), lang, quiet)
    tour.threads = threads
    from vaelab.tour.theory import information_section, mle_map_section, paradox_section

    sections = [Section(tour.t["intro_title"], tour.t["intro_text"]),
                mle_map_section(tour), information_section(tour)]  # fmt: skip
    tour.train_models()
    tour.say(tour.t["measuring"])
    clf = tour.classifier()
    sections += [paradox_section(tour), ae_vs_vae(tour, clf), elbo_section(tour),
                 review_section(tour), aae_cvae_section(tour, clf)]  # fmt: skip
    title = tour.t["report_title"]
    return write_report(out / "report.html", title, sections, tour.t["subtitle"], lang)
