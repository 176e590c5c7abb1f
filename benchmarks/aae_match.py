"""How close the label-aware AAE's codes come to its prior: the tour's AAE at several settings.

    python benchmarks/aae_match.py --settings base,r1,gaussian,long

The tour's AAE (2-D codes, a mixture of 10 Gaussians on a circle as the prior, label-aware as in
Makhzani et al.'s Figure 4: the discriminator sees the label and class c's prior samples come
from component c) trains on mnist-sample with the tour's other settings, seed 0; each setting
changes one thing (SETTINGS). On the 1,000 test digits (binarized once, seed 777) it reports:
- MMD^2 (Gaussian kernel, bandwidth the median distance of the pooled points) between the test
  codes (posterior means) and as many prior samples of their labels' components, beside the
  same statistic between fresh prior samples and those (the floor a perfect match reaches: its
  median and 95th percentile over 20 draws);
- the same for the marginal prior (the mixture, with the labels shuffled), beside its floor;
- the share of test codes nearest to their own label's component mean, and the codes' radial
  and tangential offsets from that mean (the prior's: mean 0, standard deviations 1 and 0.5).
Writes benchmarks/results/aae_match.json.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vaelab  # noqa: E402
from bench import cpu_model  # noqa: E402
from vaelab.data import binarize_fixed, load_dataset  # noqa: E402
from vaelab.evaluation.samples import median_bandwidth, mmd2  # noqa: E402
from vaelab.fileio import atomic_write_json  # noqa: E402
from vaelab.models import MODELS  # noqa: E402
from vaelab.run import DataConfig, RunConfig, TrainConfig  # noqa: E402
from vaelab.tour.lecture import TOUR_MODELS, TourBudget  # noqa: E402
from vaelab.training.trainer import train  # noqa: E402

EPOCHS = TourBudget().epochs
SETTINGS = {  # name: (what it changes, AAE config changes, epochs)
    "base": ("the tour's AAE", {}, EPOCHS),
    "r1": ("R1 penalty on D, gamma 10", {"disc_r1": 10.0}, EPOCHS),
    "gaussian": ("Gaussian posterior (D sees z ~ q(z|x))", {"posterior": "gaussian"}, EPOCHS),
    "long": (f"{3 * EPOCHS} epochs instead of {EPOCHS}", {}, 3 * EPOCHS),
}


@torch.no_grad()
def match(model, x, y, seed: int = 0, draws: int = 20) -> dict:
    """The statistics of the module docstring for the codes of x (N, ...) with labels y (N,).
    A floor is not one number: MMD^2 between two samples of one distribution varies from draw
    to draw about as much as its mean, so each floor is the median and the 95th percentile over
    `draws` fresh prior samples against the same reference sample the codes are held to."""
    z, prior = model.encode(x).mean, model.prior
    gen = torch.Generator().manual_seed(seed)
    shuffle = lambda: y[torch.randperm(len(y), generator=gen)]  # noqa: E731
    paired = prior.sample(len(z), y, generator=gen)
    marginal = prior.sample(len(z), shuffle(), generator=gen)
    bandwidth = median_bandwidth(z, paired)
    floors = {
        "by_label": [mmd2(prior.sample(len(z), y, generator=gen), paired, bandwidth)
                     for _ in range(draws)],
        "marginal": [mmd2(prior.sample(len(z), shuffle(), generator=gen), marginal, bandwidth)
                     for _ in range(draws)],
    }  # fmt: skip
    outward, along = prior.axes(y.float())
    offset = z - prior.radius * outward
    radial, tangential = (offset * outward).sum(-1), (offset * along).sum(-1)
    nearest = torch.cdist(z, prior.means()).argmin(-1)
    result = {"mmd2_by_label": mmd2(z, paired, bandwidth),
              "mmd2_marginal": mmd2(z, marginal, bandwidth), "bandwidth": bandwidth}  # fmt: skip
    for name, values in floors.items():
        q = torch.tensor(values, dtype=torch.float64).quantile(
            torch.tensor([0.5, 0.95], dtype=torch.float64)
        )
        result[f"mmd2_{name}_floor"], result[f"mmd2_{name}_floor_q95"] = q.tolist()
    return result | {
        "own_component": (nearest == y).float().mean().item(),
        "radial_mean": radial.mean().item(),
        "radial_std": radial.std().item(),
        "tangential_mean": tangential.mean().item(),
        "tangential_std": tangential.std().item(),
    }


def train_setting(changes: dict, epochs: int, data, folder: Path):
    name, tour_changes = TOUR_MODELS["aae"]
    fields = {"image_shape": data.image_shape, **tour_changes, **changes}
    config = RunConfig(model=name, model_config=MODELS[name].config_class(**fields),
                       data=DataConfig(dataset="mnist-sample"),
                       train=TrainConfig(epochs=epochs))  # fmt: skip
    return train(config, folder, quiet=True, data=data).model.eval()


def main(argv: list[str] | None = None) -> int:
    vaelab.flush_denormals()  # as the `vaelab` command does: before torch's first op
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=",".join(SETTINGS), help="which of SETTINGS")
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="scale every budget")
    parser.add_argument("--out", default="benchmarks/results/aae_match.json")
    args = parser.parse_args(argv)
    chosen = args.settings.split(",")
    unknown = [s for s in chosen if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting(s) {', '.join(unknown)}: expected {', '.join(SETTINGS)}")
    data = load_dataset("mnist-sample")
    x, y = binarize_fixed(data.test_images, "dynamic", 777), data.test_labels
    rows = []
    for name in chosen:
        what, changes, epochs = SETTINGS[name]
        epochs = max(1, round(epochs * args.epochs_scale))
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            model = train_setting(changes, epochs, data, Path(tmp) / "run")
        seconds = round(time.perf_counter() - start, 1)
        row = {"setting": name, "changes": what, "epochs": epochs, "train_seconds": seconds,
               **match(model, x, y)}  # fmt: skip
        rows.append(row)
        print(f"{name}: MMD^2 by label {row['mmd2_by_label']:.5f} (floor "
              f"{row['mmd2_by_label_floor']:.6f}), marginal {row['mmd2_marginal']:.5f} (floor "
              f"{row['mmd2_marginal_floor']:.6f}), own component {row['own_component']:.1%}",
              flush=True)  # fmt: skip
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": cpu_model(),
        "cpus": os.cpu_count(),
        "command": "python benchmarks/aae_match.py " + " ".join(argv or sys.argv[1:]),
        "seed": 0,
        "test_images": len(x),
        "rows": rows,
    }
    atomic_write_json(Path(args.out), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
