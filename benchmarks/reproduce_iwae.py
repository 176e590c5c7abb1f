"""Burda et al. (2016)'s VAE vs IWAE experiment under their protocol, at a budget you choose.

    python benchmarks/reproduce_iwae.py --epochs 10 --datasets mnist-sample,fashion-mnist \
        --data-dir ../shared/data/fashion-mnist

Architecture: one stochastic layer, 784-200-200-50 tanh encoder and decoder, Bernoulli
likelihood. Protocol: dynamic binarization, the test set binarized once with a fixed seed,
Adam with the paper's learning-rate stages (3^i epochs at 1e-3 * 10^(-i/7)), batch 20, test
NLL by k=5000 importance samples. The paper trains 3,280 epochs on the 60,000 MNIST images; a
short budget on 9,000 images is not comparable and the table says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import vaelab
from bench import cpu_model
from vaelab.data import load_dataset
from vaelab.evaluation.likelihood import elbo, iwae_bound, mean_and_se, per_image
from vaelab.models import MODELS
from vaelab.run import DataConfig, RunConfig, TrainConfig
from vaelab.training.trainer import train

PUBLISHED = {  # test NLL in nats; where each figure comes from
    ("mnist", "VAE"): (86.76, "Burda et al. 2016, Table 1, 1 layer, k=1, 3,280 epochs"),
    ("mnist", "IWAE k=5"): (85.54, "Burda et al. 2016, Table 1, 1 layer, k=5"),
    ("mnist", "IWAE k=50"): (84.78, "Burda et al. 2016, Table 1, 1 layer, k=50"),
    ("fashion-mnist", "VAE"): (
        228.70,
        "Exemplar VAE paper (Norouzi et al. 2020), Gaussian prior, gated MLP, dynamic binarization",
    ),  # fmt: skip
}
RUNS = [("VAE", "vae", {}), ("IWAE k=5", "iwae", {"k": 5}), ("IWAE k=50", "iwae", {"k": 50})]


def burda_config(name: str, changes: dict, dataset: str, data_dir, epochs: int, batch: int):
    model_config = MODELS[name].config_class(
        image_shape=(1, 28, 28), latent_dim=50, hidden=(200, 200), activation="tanh", **changes
    )
    train_config = TrainConfig(epochs=epochs, batch_size=batch, lr_schedule="burda")
    data_config = DataConfig(dataset=dataset, data_dir=data_dir)
    return RunConfig(model=name, model_config=model_config, data=data_config, train=train_config)


def not_comparable(dataset: str, label: str, epochs: int, n_train: int) -> str:
    if (dataset, label) not in PUBLISHED and (dataset.removesuffix("-sample"), label) \
            not in PUBLISHED:  # fmt: skip
        return "no published row"
    reasons = []
    if dataset == "fashion-mnist":
        reasons.append(f"{epochs} epochs vs training to convergence with early stopping")
        reasons.append("published net differs (gated MLP, z=40)")
    elif epochs < 3280:
        reasons.append(f"{epochs} of 3,280 epochs")
    if n_train < 60000:
        reasons.append(f"{n_train:,} of 60,000 training images")
    return "; ".join(reasons) or "comparable"


def evaluate(model, x, k: int):
    model.eval()
    torch.manual_seed(0)
    neg_elbo, _ = mean_and_se(-per_image(lambda a, b: elbo(model, a, b), x))
    start = time.perf_counter()
    nll, se = mean_and_se(-per_image(lambda a, b: iwae_bound(model, a, b, k), x))
    return {"neg_elbo": neg_elbo, "nll": nll, "nll_se": se,
            "eval_seconds": time.perf_counter() - start}  # fmt: skip


def main() -> None:
    vaelab.flush_denormals()  # as the `vaelab` command does: before torch's first op
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="the budget (paper: 3280)")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--datasets", default="mnist-sample")
    parser.add_argument("--data-dir", help="where fashion-mnist / mnist files are")
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--eval-limit", type=int, help="evaluate the first N test images only")
    parser.add_argument("--train-limit", type=int, help="train on the first N images only")
    parser.add_argument("--out", default="benchmarks/results/reproduce_iwae.json")
    args = parser.parse_args()
    rows = []
    for dataset in args.datasets.split(","):
        data_dir = None if dataset == "mnist-sample" else args.data_dir
        data = load_dataset(dataset, data_dir)
        if args.train_limit:  # a quick check: the comparability note counts what trained
            n = args.train_limit
            labels = None if data.train_labels is None else data.train_labels[:n]
            data = dataclasses.replace(data, train_images=data.train_images[:n],
                                       train_labels=labels)  # fmt: skip
        for label, name, changes in RUNS:
            config = burda_config(name, changes, dataset, data_dir, args.epochs, args.batch_size)
            start = time.perf_counter()
            trainer = train(config, Path(tempfile.mkdtemp()) / "run", quiet=True, data=data)
            row = {"dataset": dataset, "model": label, "epochs": args.epochs,
                   "train_seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
            row.update(evaluate(trainer.model, trainer.test_x[: args.eval_limit], args.k))
            key = (dataset.removesuffix("-sample"), label)
            row["published"], row["source"] = PUBLISHED.get(key, (None, ""))
            row["comparability"] = not_comparable(dataset, label, args.epochs,
                                                  len(data.train_images))  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'dataset':<14} {'model':<10} {'-ELBO':>8} {'NLL':>8} {'+-':>5} {'paper':>7}  note")
    for r in rows:
        paper = f"{r['published']:.2f}" if r["published"] else "-"
        print(f"{r['dataset']:<14} {r['model']:<10} {r['neg_elbo']:8.2f} {r['nll']:8.2f} "
              f"{r['nll_se']:5.2f} {paper:>7}  {r['comparability']}")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"k": args.k, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "platform": platform.platform(), "processor": cpu_model(),
            "batch_size": args.batch_size}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
