"""Every registered model on one dataset at the same budget: one table.

    python benchmarks/model_family.py --epochs 50 --hidden 400,400 --latents 2,20
    python benchmarks/model_family.py --dataset fashion-mnist --epochs 10 --latents 20 \
        --out benchmarks/results/model_family_fashion.json

Each model of the registry trains at least once (MODELS_TO_RUN adds variants: beta, k, the
AAE's priors) with the same MLP (--hidden), latent size, epochs, Adam 1e-3 and seed 0, on
mnist-sample or a named dataset (`--dataset`, `--data-dir`; `--train-images N`: the first N
training images only). Columns: test reconstruction error -log p(x | z = posterior mean) (nats
per image, the same measure for every model), test negative ELBO (one sample, analytic KL,
beta = 1) and the negative IWAE-k bound with k = --k-eval for models with a likelihood estimate
(DensityModel), the active units (posterior means whose variance over the test images exceeds
0.01), the CVAE's conditional-sample accuracy by a CNN classifier (and its label-transfer
accuracy: test codes decoded under another label, classified as that label), and the AAE
discriminator's accuracy on test codes vs prior samples (at the end, and at the end of each of
the last 5 epochs: it oscillates), and for every model the sample quality of 1,000 prior
samples against 1,000 test images in the classifier's features (evaluation/samples.py: Frechet
classifier distance, precision and recall, k=3), beside the same numbers between those test
images and 1,000 training images (the floor). A configuration a model refuses (a latent size it
cannot take) is listed under `skipped` with its reason. Writes benchmarks/results/
model_family.json (or --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

import vaelab
from bench import cpu_model
from vaelab.data import load_dataset
from vaelab.errors import VaelabError
from vaelab.evaluation.classifier import train_classifier
from vaelab.evaluation.diagnostics import active_units, posterior_means
from vaelab.evaluation.likelihood import dataset_mean, elbo, iwae_bound, reconstruction_nll
from vaelab.evaluation.run_eval import SAMPLE_QUALITY_IMAGES, real_images
from vaelab.evaluation.samples import sample_quality
from vaelab.models import MODELS, Batch, DensityModel
from vaelab.run import DataConfig, RunConfig, TrainConfig
from vaelab.training.trainer import train

MODELS_TO_RUN = [  # (label, registered name, config changes)
    ("AE", "ae", {}),
    ("VAE", "vae", {}),
    ("beta-VAE (beta=4)", "beta-vae", {"beta": 4.0}),
    ("IWAE k=5", "iwae", {"k": 5}),
    ("IWAE k=50", "iwae", {"k": 50}),
    ("CVAE", "cvae", {}),
    ("CVAE (input-only label)", "cvae", {"conditioning": "concat"}),
    ("AAE (mixture prior)", "aae", {"prior": "mixture"}),
    ("AAE (mixture prior, R1 10)", "aae", {"prior": "mixture", "disc_r1": 10.0}),
    ("AAE (normal prior)", "aae", {"prior": "normal"}),
    ("AAE (normal prior, R1 10)", "aae", {"prior": "normal", "disc_r1": 10.0}),
    (
        "AAE (normal prior, Gaussian q, R1 10)",
        "aae",
        {"prior": "normal", "posterior": "gaussian", "disc_r1": 10.0},
    ),
    ("MIWAE(4,4)", "miwae", {"m": 4, "k": 4}),
    ("PIWAE(4,4)", "piwae", {"m": 4, "k": 4}),
    ("CIWAE(0.5), k=16", "ciwae", {"k": 16}),
    ("VAE + IAF", "vae-iaf", {}),
    ("IWAE k=5 + IAF", "iwae-iaf", {"k": 5}),
    ("HVAE", "hvae", {}),
    ("Ladder VAE", "ladder-vae", {}),
    ("WAE-MMD", "wae", {}),
    ("InfoVAE (MMD-VAE)", "info-vae", {}),
    ("beta-TCVAE", "beta-tcvae", {}),
    ("FactorVAE", "factor-vae", {}),
    ("VQ-VAE", "vq-vae", {}),
]


@torch.no_grad()
def sample_judge(classifier, data, n: int = SAMPLE_QUALITY_IMAGES):
    """The classifier's features of n real test images (what samples are judged against) and
    the floor: the sample quality of n real training images against them (as `vaelab eval`)."""
    real = classifier.features(real_images(data.test_images, n, 0))
    return real, sample_quality(real, classifier.features(real_images(data.train_images, n, 1)))


@torch.no_grad()
def quality_of(images, classifier, real) -> dict[str, float]:
    """FCD, precision and recall of images (in [0, 1]) against the real features."""
    return sample_quality(real, classifier.features(images.clamp(0, 1)))


@torch.no_grad()
def prior_sample_quality(model, classifier, real) -> dict[str, float]:
    n = len(real)
    samples = model.generate(n, model.sample_labels(n), torch.Generator().manual_seed(0))
    return quality_of(samples, classifier, real)


@torch.no_grad()
def evaluate(model, x, y, k_eval, classifier, real):
    model.eval()
    torch.manual_seed(0)
    row = {"recon": dataset_mean(lambda a, b: reconstruction_nll(model, a, b), x, y)}
    row["active_units"] = active_units(posterior_means(model, x, y))[0]
    if isinstance(model, DensityModel):
        row["neg_elbo"] = -dataset_mean(lambda a, b: elbo(model, a, b), x, y)
        row[f"neg_iwae_{k_eval}"] = -dataset_mean(lambda a, b: iwae_bound(model, a, b, k_eval),
                                                  x, y)  # fmt: skip
    if model.label_classes:
        labels = model.sample_labels(1000)
        samples = model.generate(1000, labels, torch.Generator().manual_seed(0))
        row["cond_sample_acc"] = classifier.accuracy(samples, labels)
        # Does the decoder use the label? Decode test codes under a different label (+3 mod
        # classes): near 1 if it does, near 0 if the class hides in z and the label is ignored.
        other = (y[:1000] + 3) % model.config.num_classes
        moved = model.decode(model.encode(x[:1000], y[:1000]).mean, other).mean
        row["label_transfer_acc"] = classifier.accuracy(moved, other)
    if "disc_acc" in model.evaluate(Batch(x[:1000], y[:1000])):
        row["disc_acc"] = model.evaluate(Batch(x[:1000], y[:1000]))["disc_acc"].item()
    row.update(prior_sample_quality(model, classifier, real))
    return row


def model_config(name: str, changes: dict, data, latent: int, hidden: tuple[int, ...]):
    """The registered model's config for this run, as `vaelab train` builds it from the data."""
    cls = MODELS[name]
    from_data = cls.fields_from_data(data.num_classes, len(data.train_images))
    fields = {"image_shape": data.image_shape, "latent_dim": latent, "hidden": hidden,
              **from_data, **changes}  # fmt: skip
    return cls.config_class(**fields)


def main(argv: list[str] | None = None) -> int:
    vaelab.flush_denormals()  # as the `vaelab` command does: before torch's first op
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist-sample")
    parser.add_argument("--data-dir", help="where the dataset's files are")
    parser.add_argument("--train-images", type=int, help="train on the first N images only")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--hidden", default="400,400", help="hidden layers of every MLP")
    parser.add_argument("--latents", default="2,20")
    parser.add_argument("--k-eval", type=int, default=1000)
    parser.add_argument("--only", help="labels of MODELS_TO_RUN to run, separated by ;")
    parser.add_argument("--out", default="benchmarks/results/model_family.json")
    args = parser.parse_args(argv)
    data = load_dataset(args.dataset, args.data_dir)
    if args.train_images:
        n = args.train_images
        labels = None if data.train_labels is None else data.train_labels[:n]
        data = dataclasses.replace(data, train_images=data.train_images[:n], train_labels=labels)
    classifier = train_classifier(data.train_images, data.train_labels)
    real, floor = sample_judge(classifier, data)
    hidden = tuple(int(v) for v in args.hidden.split(","))
    results, skipped = [], []
    for latent in [int(v) for v in args.latents.split(",")]:
        for label, name, changes in MODELS_TO_RUN:
            if args.only and label not in args.only.split(";"):
                continue
            if name not in MODELS:
                skipped.append({"model": label, "latent": latent, "reason": "not registered"})
                continue
            try:
                config = model_config(name, changes, data, latent, hidden)
                config.validate()
            except VaelabError as err:  # e.g. the mixture-on-a-circle prior is 2-D only
                skipped.append({"model": label, "latent": latent, "reason": str(err)})
                continue
            run = RunConfig(model=name, model_config=config,
                            data=DataConfig(dataset=args.dataset, data_dir=args.data_dir),
                            train=TrainConfig(epochs=args.epochs))  # fmt: skip
            start = time.perf_counter()
            trainer = train(run, Path(tempfile.mkdtemp()) / "run", quiet=True, data=data)
            seconds = time.perf_counter() - start
            row = {"model": label, "registered": name, "latent": latent, "epochs": args.epochs,
                   "hidden": list(hidden), "train_seconds": round(seconds, 1)}  # fmt: skip
            row.update(evaluate(trainer.model, trainer.test_x, trainer.test_y, args.k_eval,
                                classifier, real))  # fmt: skip
            if "disc_acc" in row:  # the GAN oscillates: D's test accuracy over the last epochs
                lines = (trainer.run_dir / "metrics.jsonl").read_text().splitlines()
                accs = [json.loads(v).get("test/disc_acc") for v in lines]
                row["disc_acc_last5"] = [a for a in accs if a is not None][-5:]
            results.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                              for k, v in row.items()}), flush=True)  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
               "platform": platform.platform(), "processor": cpu_model()}  # fmt: skip
    command = "python benchmarks/model_family.py " + " ".join(argv or sys.argv[1:])
    record = {"machine": machine, "date": datetime.date.today().isoformat(),
              "command": command.strip(), "seed": 0, "dataset": args.dataset,
              "train_images": len(data.train_images), "k_eval": args.k_eval,
              "sample_quality_images": len(real), "sample_quality_floor": floor,
              "skipped": skipped, "rows": results}  # fmt: skip
    out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
