"""Disentanglement on `shapes`: the VAE, beta-VAE, beta-TCVAE and FactorVAE at one budget.

    python benchmarks/disentanglement.py --steps 300 --seeds 0,1

Every model trains the same MLP encoder and decoder (--hidden, --latent-dim) with a Bernoulli
likelihood for the same number of steps (--steps) of the same batch size, from each of the same
seeds, on `shapes` (vaelab.data.shapes: dSprites' factors, 64 x 64). Then MIG (Chen et al. 2018)
and DCI (Eastwood & Williams 2018) of the posterior means of the first --eval-images test images
against the true factors (vaelab.evaluation.disentanglement). The papers' claim checked: the
total-correlation penalties (beta-TCVAE, FactorVAE) give a higher MIG than the plain VAE. A model
that is not registered is listed under `skipped`.
Writes benchmarks/results/disentanglement.json: the date, the machine, the command, the
settings, one row per model and seed, and each model's mean over the seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import vaelab
from vaelab.data import ImageData, binarize_fixed, load_dataset
from vaelab.evaluation.diagnostics import posterior_means
from vaelab.evaluation.disentanglement import dci, mig
from vaelab.models import MODELS
from vaelab.run import DataConfig, RunConfig, TrainConfig
from vaelab.training.trainer import train

MODELS_TO_RUN = [  # (label, registered name, config changes): the papers' dSprites weights
    ("VAE", "vae", {}),
    ("beta-VAE (beta=4)", "beta-vae", {"beta": 4.0}),
    ("beta-TCVAE (beta=6)", "beta-tcvae", {"beta": 6.0}),
    ("FactorVAE (gamma=35)", "factor-vae", {"gamma": 35.0}),
]
TRAIN_TEST_IMAGES = 500  # the trainer's own test pass: the scored images are set aside
TEST_SEED = 777


def machine() -> str:
    """The first `model name` line of /proc/cpuinfo (the processor), else the platform's."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    names = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else sys.platform


def model_config(name: str, changes: dict, data: ImageData, args) -> object:
    cls = MODELS[name]
    fields = {"image_shape": data.image_shape, "latent_dim": args.latent_dim,
              "hidden": args.hidden, **cls.fields_from_data(None, len(data.train_images)),
              **changes}  # fmt: skip
    return cls.config_class(**fields)


def epochs_for(args, data: ImageData) -> int:
    """Enough epochs for --steps steps (the run stops at --steps)."""
    return -(-args.steps * args.batch_size // len(data.train_images))


@torch.no_grad()
def score(model, x: torch.Tensor, factors: torch.Tensor) -> dict:
    codes = posterior_means(model.eval(), x)
    m, d = mig(codes, factors), dci(codes, factors)
    return {"mig": m.score, "mig_per_factor": m.per_factor.tolist(),
            "dci_disentanglement": d.disentanglement, "dci_completeness": d.completeness,
            "dci_informativeness": d.informativeness}  # fmt: skip


def run_one(label: str, name: str, changes: dict, seed: int, data: ImageData, held_out, args):
    config = RunConfig(model=name, model_config=model_config(name, changes, data, args),
                       data=DataConfig(dataset="shapes", test_seed=TEST_SEED),
                       train=TrainConfig(epochs=epochs_for(args, data), lr=args.lr, seed=seed,
                                         batch_size=args.batch_size, test_every=0))  # fmt: skip
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = train(config, Path(tmp) / "run", max_steps=args.steps, quiet=True, data=data)
    seconds = time.perf_counter() - start
    row = {"model": label, "registered": name, "seed": seed, "train_seconds": round(seconds, 1)}
    return row | score(trainer.model, *held_out)


def summarise(rows: list[dict]) -> list[dict]:
    """Each model's mean (and spread) over the seeds."""
    out = []
    for label in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == label]
        entry = {"model": label, "seeds": len(mine)}
        for key in ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness"):
            values = [r[key] for r in mine]
            entry[key] = statistics.fmean(values)
            entry[f"{key}_range"] = [min(values), max(values)]
        out.append(entry)
    return out


def split(data: ImageData, n_eval: int):
    """Train on data with a small test split; score on the first n_eval other test images."""
    if n_eval + TRAIN_TEST_IMAGES > len(data.test_images):
        raise SystemExit(f"--eval-images {n_eval} leaves under {TRAIN_TEST_IMAGES} test images")
    x = binarize_fixed(data.test_images[:n_eval], "dynamic", TEST_SEED)
    held_out = (x, data.test_factors[:n_eval])
    rest = slice(n_eval, n_eval + TRAIN_TEST_IMAGES)
    smaller = dataclasses.replace(data, test_images=data.test_images[rest],
                                  test_labels=data.test_labels[rest],
                                  test_factors=data.test_factors[rest])  # fmt: skip
    return smaller, held_out


def main(argv: list[str] | None = None) -> dict:
    vaelab.flush_denormals()  # before torch starts its threads (training/runtime.py)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--hidden", default="256", help="hidden layers of the MLPs, e.g. 512,512")
    parser.add_argument("--eval-images", type=int, default=5000)
    parser.add_argument("--out", default="benchmarks/results/disentanglement.json")
    args = parser.parse_args(argv)
    args.hidden = tuple(int(v) for v in args.hidden.split(","))
    seeds = [int(v) for v in args.seeds.split(",")]
    data, held_out = split(load_dataset("shapes"), args.eval_images)
    todo = [m for m in MODELS_TO_RUN if m[1] in MODELS]
    rows = []
    for seed in seeds:  # seed-major: a cut-short run still has every model at the first seed
        for label, name, changes in todo:
            rows.append(run_one(label, name, changes, seed, data, held_out, args))
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                              for k, v in rows[-1].items() if k != "mig_per_factor"}),
                  flush=True)  # fmt: skip
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "command": "python benchmarks/disentanglement.py " + " ".join(argv or sys.argv[1:]),
        "seeds": seeds,
        "settings": {"dataset": "shapes", "steps": args.steps, "batch_size": args.batch_size,
                     "lr": args.lr, "latent_dim": args.latent_dim, "hidden": list(args.hidden),
                     "net": "mlp", "likelihood": "bernoulli", "eval_images": args.eval_images,
                     "codes": "posterior means", "factors": list(data.factor_names)},
        "skipped": [label for label, name, _ in MODELS_TO_RUN if name not in MODELS],
        "rows": rows,
        "summary": summarise(rows),
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
