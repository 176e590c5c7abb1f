"""Rainforth et al. (2018)'s IWAE variants at one budget, and the IWAE's gradient SNR against K.

    python benchmarks/iwae_variants.py --epochs 1 --k-eval 1000 --eval-images 500

Trains a VAE, IWAE-64, MIWAE(8, 8), PIWAE(8, 8) and CIWAE(beta = 0.5, K = 64) on mnist-sample
(the 9,000 training digits that ship with vaelab, dynamic binarization; the test split binarized
once with the data config's fixed seed): the same tanh MLP (784-H-D and back, Bernoulli
likelihood), epochs, batch size, learning rate and seed for each. Records each model's test
NLL by k importance samples (and its ELBO), then, at the trained IWAE-64's parameters, the
signal-to-noise ratio of the gradient of the IWAE-K bound for K in 1, 4, 16, 64:
SNR = |E[g]| / std[g] per parameter over R repeated estimates on one fixed batch of test
images (fresh z each time), summarized per network by the median over its parameters (those
whose gradient is exactly 0 every time, the weights from pixels blank in every image of the
batch, left out). Rainforth et al. (Section 3) show the encoder's SNR falling as 1/sqrt(K) and the
decoder's rising as sqrt(K). K = 1 uses the same estimator, log w with the sampled KL.

Writes benchmarks/results/iwae_variants.json (date, machine, seeds, command, settings) and
docs/iwae_snr.png, drawn from that JSON (`--plot-only` redraws it from the file alone).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from vaelab.data import ImageData, binarize_fixed, load_dataset
from vaelab.distributions import log_mean_exp
from vaelab.evaluation.likelihood import elbo, iwae_bound, mean_and_se, per_image_seeded
from vaelab.models import MODELS, DensityModel
from vaelab.run import DataConfig, RunConfig, TrainConfig
from vaelab.training.runtime import flush_denormals
from vaelab.training.trainer import train
from vaelab.viz.figures import save_figure

ROOT = Path(__file__).resolve().parents[1]
RUNS = [  # (label, registered model, config fields): M x K = 64 samples per image but the VAE's
    ("VAE", "vae", {}),
    ("IWAE-64", "iwae", {"k": 64}),
    ("MIWAE(8,8)", "miwae", {"m": 8, "k": 8}),
    ("PIWAE(8,8)", "piwae", {"m": 8, "k": 8}),
    ("CIWAE(0.5)", "ciwae", {"k": 64, "elbo_weight": 0.5}),
]
SNR_MODEL = "IWAE-64"


def machine(info: Path = Path("/proc/cpuinfo")) -> str:
    """The first "model name" line of /proc/cpuinfo (the processor's name)."""
    lines = info.read_text().splitlines() if info.exists() else []
    names = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else "not recorded"


def subset(data: ImageData, train_images: int | None) -> ImageData:
    """The first `train_images` training digits (a tiny budget for tests), else all of them."""
    if train_images is None:
        return data
    n = train_images
    return ImageData(name=data.name, train_images=data.train_images[:n],
                     train_labels=data.train_labels[:n], test_images=data.test_images,
                     test_labels=data.test_labels, source=data.source,
                     split=f"first {n} training digits of {data.name}",
                     num_classes=data.num_classes, class_names=data.class_names)  # fmt: skip


def run_config(name: str, changes: dict, args: argparse.Namespace) -> RunConfig:
    model = MODELS[name].config_class(latent_dim=args.latent_dim, hidden=tuple(args.hidden),
                                      activation="tanh", **changes)  # fmt: skip
    schedule = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           seed=args.seed, test_every=0)  # fmt: skip
    return RunConfig(model=name, model_config=model, data=DataConfig(dataset="mnist-sample"),
                     train=schedule)  # fmt: skip


def test_numbers(model: DensityModel, x: torch.Tensor, k: int, seed: int) -> tuple[dict, Tensor]:
    """-ELBO and the k-sample NLL estimate over the images x, with standard errors (nats), and
    the NLL of each image (N,)."""
    model.eval()
    threads = torch.get_num_threads()

    def over_images(fn):
        return per_image_seeded(fn, x, None, seed, threads=threads)

    start = time.perf_counter()
    neg_elbo, elbo_se = mean_and_se(-over_images(lambda a, b, g: elbo(model, a, b, g)))
    per_image = -over_images(lambda a, b, g: iwae_bound(model, a, b, k, generator=g))  # (N,)
    nll, nll_se = mean_and_se(per_image)
    seconds = round(time.perf_counter() - start, 1)
    numbers = {"test_neg_elbo": neg_elbo, "test_neg_elbo_se": elbo_se, "test_nll": nll,
               "test_nll_se": nll_se, "eval_seconds": seconds}  # fmt: skip
    return numbers, per_image


def gradient_moments(model: DensityModel, x: torch.Tensor, k: int, reps: int,
                     nets: dict[str, list], gen: torch.Generator) -> dict[str, tuple]:  # fmt: skip
    """Mean and std (float64, over `reps` estimates) of each parameter's gradient of the
    IWAE-k loss on the batch x, per net: {net: (mean (P,), std (P,))}."""
    params = [p for group in nets.values() for p in group]
    sums = {n: 0.0 for n in nets}
    squares = {n: 0.0 for n in nets}
    for _ in range(reps):
        loss = -log_mean_exp(model.log_weights(x, None, k, gen), dim=0).mean()  # (K, B) -> ()
        grads = iter(torch.autograd.grad(loss, params))
        for name, group in nets.items():
            g = torch.cat([next(grads).flatten() for _ in group]).double()  # (P,)
            sums[name], squares[name] = sums[name] + g, squares[name] + g * g
    out = {}
    for name in nets:
        mean = sums[name] / reps
        var = (squares[name] - reps * mean * mean) / (reps - 1)
        out[name] = (mean, var.clamp_min(0).sqrt())
    return out


def snr_summary(mean: torch.Tensor, std: torch.Tensor) -> dict:
    """Quartiles over the parameters of |E[g]| / std[g], those with a non-zero gradient."""
    live = std > 0
    snr = (mean[live].abs() / std[live]).float()
    q = torch.quantile(snr, torch.tensor([0.25, 0.5, 0.75])).tolist()
    return {"median": q[1], "q25": q[0], "q75": q[2], "parameters": int(live.sum()),
            "zero_gradient": int((~live).sum())}  # fmt: skip


def gradient_snr(model: DensityModel, x: torch.Tensor, ks: list[int], reps: int,
                 seed: int) -> dict:  # fmt: skip
    """{net: {K: summary}} for the encoder and the decoder (with its likelihood head)."""
    model.train()
    nets = {"encoder": list(model.encoder.parameters()),
            "decoder": [*model.decoder.parameters(), *model.likelihood.parameters()]}  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, dict] = {name: {} for name in nets}
    for k in ks:
        for name, (mean, std) in gradient_moments(model, x, k, reps, nets, gen).items():
            out[name][str(k)] = snr_summary(mean, std)
    return out


def train_all(args: argparse.Namespace, data: ImageData, runs: Path, say) -> tuple[list, dict]:
    """Train every model of RUNS; its row of numbers, and the trained models by label."""
    rows, models, nll = [], {}, {}
    for label, name, changes in RUNS:
        start = time.perf_counter()
        trainer = train(run_config(name, changes, args), runs / name, quiet=True, data=data,
                        max_steps=args.max_steps)  # fmt: skip
        last = trainer.state.history[-1] if trainer.state.history else {}
        row = {"model": label, "registered_as": name, "config": changes,
               "train_seconds": round(time.perf_counter() - start, 1),
               "steps": trainer.state.step, "train_loss": last.get("train/loss")}  # fmt: skip
        x = trainer.test_x[: args.eval_images]
        numbers, nll[label] = test_numbers(trainer.model, x, args.k_eval, args.seed)
        rows.append({**row, **numbers})
        models[label] = trainer.model
        say(json.dumps(rows[-1]))
    for row in rows:  # paired over the same images: far smaller errors than the NLLs' own
        diff, se = mean_and_se(nll[row["model"]] - nll[SNR_MODEL])
        row[f"nll_minus_{SNR_MODEL}"], row[f"nll_minus_{SNR_MODEL}_se"] = diff, se
    return rows, models


def snr_figure(results: dict) -> Figure:
    """Left: the IWAE's gradient SNR against K per net; right: each model's test NLL less the
    IWAE-64's on the same images (paired standard errors)."""
    fig = Figure(figsize=(10.5, 4))
    snr_panel(fig.add_subplot(1, 2, 1), results["snr"])
    nll_panel(fig.add_subplot(1, 2, 2), results["rows"], results["settings"])
    fig.tight_layout()
    return fig


def snr_panel(ax, snr: dict) -> None:
    for name, marker in (("encoder", "o"), ("decoder", "s")):
        per_k = [(int(k), s) for k, s in sorted(snr[name].items(), key=lambda kv: int(kv[0]))]
        median = [s["median"] for _, s in per_k]
        spread = [[s["median"] - s["q25"] for _, s in per_k],
                  [s["q75"] - s["median"] for _, s in per_k]]  # fmt: skip
        ax.errorbar([k for k, _ in per_k], median, yerr=spread, marker=marker, capsize=3,
                    label=f"{name}: median over parameters, quartiles")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks([k for k, _ in per_k], [str(k) for k, _ in per_k])
    ax.set_yscale("log")
    ax.set_xlabel("K (importance samples in the IWAE bound)")
    ax.set_ylabel("gradient SNR  |E[g]| / std[g]")
    ax.set_title(f"{SNR_MODEL} checkpoint: gradient SNR against K", fontsize=10)
    ax.legend(fontsize=8)


def nll_panel(ax, rows: list[dict], settings: dict) -> None:
    key = f"nll_minus_{SNR_MODEL}"
    diff, se = [r[key] for r in rows], [r[f"{key}_se"] for r in rows]
    ax.barh([r["model"] for r in rows], diff, xerr=se, capsize=3, color="#4c72b0")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    for i, row in enumerate(rows):
        ax.annotate(f"NLL {row['test_nll']:.2f}", (max(diff) + max(se), i), fontsize=8,
                    va="center", xytext=(6, 0), textcoords="offset points")  # fmt: skip
    ax.set_xlim(min(0.0, min(diff)) - 1.0, max(diff) + max(se) + 0.35 * (max(diff) + 1.0))
    ax.set_xlabel(f"test NLL - {SNR_MODEL}'s (nats; k={settings['k_eval']}, "
                  f"{settings['eval_images']} test images)")  # fmt: skip
    budget = settings["max_steps"] and f"{settings['max_steps']} steps"
    budget = budget or f"{settings['epochs']} epoch(s)"
    ax.set_title(f"the same budget, {budget} each, seed {settings['seed']}", fontsize=10)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="the budget, the same for each")
    parser.add_argument("--max-steps", type=int, help="stop each run after N steps (tests)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, nargs="+", default=[100])
    parser.add_argument("--latent-dim", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="weights, noise, order, eval")
    parser.add_argument("--train-images", type=int, help="the first N training digits only")
    parser.add_argument("--k-eval", type=int, default=5000, help="importance samples for NLL")
    parser.add_argument("--eval-images", type=int, default=1000, help="the first N test digits")
    parser.add_argument("--snr-ks", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--snr-reps", type=int, default=100, help="gradient estimates per K")
    parser.add_argument("--snr-batch", type=int, default=20, help="test digits in the batch")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/iwae_variants.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs/iwae_snr.png")
    parser.add_argument("--plot-only", action="store_true", help="redraw the figure from --out")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, argv: list[str], say) -> dict:
    data = subset(load_dataset("mnist-sample"), args.train_images)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as runs, flush_denormals():
        rows, models = train_all(args, data, Path(runs), say)
        # The first test digits, binarized as the test set (dynamic, its fixed seed).
        x_snr = binarize_fixed(data.test_images, "dynamic", DataConfig().test_seed)
        x_snr = x_snr[: args.snr_batch]
        snr = gradient_snr(models[SNR_MODEL], x_snr, args.snr_ks, args.snr_reps, args.seed)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "figure", "plot_only")}
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join(["python", "benchmarks/iwae_variants.py", *argv]),
        "seeds": {
            "train": args.seed,
            "eval": args.seed,
            "snr": args.seed,
            "test_binarization": DataConfig().test_seed,
        },
        "settings": {
            **settings,
            "dataset": "mnist-sample",
            "binarization": "dynamic",
            "train_images": len(data.train_images),
            "activation": "tanh",
            "likelihood": "bernoulli",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "rows": rows,
        "snr": snr,
        "total_seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None, say=print) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if not args.plot_only:
        results = measure(args, argv, say)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    save_figure(snr_figure(json.loads(args.out.read_text())), args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
