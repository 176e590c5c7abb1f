"""Samplers fitted after training: prior samples against samples of a Gaussian mixture fitted to
the training codes (vaelab.samplers), for an AE, a VAE and, where one is registered, a WAE.

    python benchmarks/posthoc_sampler.py --epochs 10

Every model trains on mnist-sample at the same budget and seed (--epochs, an MLP of --hidden,
--latent dimensions). Then 1,000 samples of each sampler are judged against 1,000 test images
in the reference classifier's features (Frechet classifier distance, precision and recall with
k=3; evaluation/samples.py), beside the floor: 1,000 training images judged alike. Samplers:
the prior, and mixtures of --components Gaussians with full and with diagonal covariances
(full is what `vaelab sample --sampler gmm` fits). Writes benchmarks/results/posthoc_sampler.json
with the date, the machine (the first "model name" of /proc/cpuinfo), the seed, the command and
the settings.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import vaelab
from model_family import prior_sample_quality, quality_of, sample_judge
from vaelab.data import load_dataset
from vaelab.evaluation.classifier import train_classifier
from vaelab.models import MODELS
from vaelab.run import DataConfig, RunConfig, TrainConfig
from vaelab.samplers import decode_codes, fitted_mixture
from vaelab.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = ("ae", "vae", "wae")  # the WAE where another module has registered it
COVARIANCES = ("full", "diag")


def first_model_name(info: Path = Path("/proc/cpuinfo")) -> str:
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return "not recorded"


def train_model(name: str, args, data, out: Path):
    cls = MODELS[name].config_class
    fields = {"image_shape": data.image_shape, "latent_dim": args.latent,
              "hidden": tuple(int(v) for v in args.hidden.split(","))}  # fmt: skip
    config = RunConfig(model=name, model_config=cls(**fields), data=DataConfig("mnist-sample"),
                       train=TrainConfig(epochs=args.epochs, seed=args.seed))  # fmt: skip
    start = time.perf_counter()
    trainer = train(config, out / name, quiet=True, data=data)
    return trainer, time.perf_counter() - start


@torch.no_grad()
def mixture_row(trainer, covariance: str, components: int, classifier, real) -> dict:
    """Fit (encode the training images, EM), then judge 1,000 decoded mixture samples."""
    model, labels = trainer.model.cpu().eval(), trainer.train_y
    train_set = (trainer.train_x.cpu(), None if labels is None else labels.cpu())
    start = time.perf_counter()
    gmm = fitted_mixture(trainer.run_dir, model, components, covariance, train_set)
    seconds = time.perf_counter() - start
    z = gmm.sample(len(real), torch.Generator().manual_seed(0)).float()
    row = quality_of(decode_codes(model, z), classifier, real)
    return {"sampler": f"gmm-{components} {covariance}", **row, "fit_seconds": round(seconds, 2)}


def model_rows(name: str, args, data, classifier, real, out: Path) -> list[dict]:
    trainer, seconds = train_model(name, args, data, out)
    model = trainer.model.cpu().eval()
    rows = [{"sampler": "prior", **prior_sample_quality(model, classifier, real)}]
    rows += [mixture_row(trainer, cov, args.components, classifier, real) for cov in COVARIANCES]
    return [{"model": name, "train_seconds": round(seconds, 1), **row} for row in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", default="400", help="hidden layers of every MLP")
    parser.add_argument("--latent", type=int, default=20)
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/posthoc_sampler.json"))
    args = parser.parse_args(argv)
    vaelab.flush_denormals()  # before torch starts its worker threads (training/runtime.py)
    torch.manual_seed(args.seed)
    data = load_dataset("mnist-sample")
    classifier = train_classifier(data.train_images, data.train_labels)  # the reference recipe
    real, floor = sample_judge(classifier, data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m for m in CANDIDATES if m in MODELS]:
            rows += model_rows(name, args, data, classifier, real, Path(tmp))
            print(json.dumps(rows[-3:]), flush=True)
    record = {
        "date": datetime.date.today().isoformat(),
        "machine": {
            "processor": first_model_name(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "seed": args.seed,
        "command": "python benchmarks/posthoc_sampler.py " + " ".join(argv or sys.argv[1:]),
        "settings": {
            "dataset": "mnist-sample",
            "epochs": args.epochs,
            "hidden": args.hidden,
            "latent": args.latent,
            "components": args.components,
            "samples": len(real),
            "k": 3,
            "torch": torch.__version__,
        },
        "floor": floor,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
