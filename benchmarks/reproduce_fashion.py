"""The Fashion-MNIST protocol against its published rows: VAE, IWAE k=5, the two-layer HVAE and
the VampPrior for each.

    python benchmarks/reproduce_fashion.py --data-dir ../shared/data/fashion-mnist --budget 30m

Each model trains with configs/fashion-mnist-protocol.toml (z=40, gated 300-300, Adam 5e-4,
batch 100, KL warm-up 100 epochs, early stopping on the validation ELBO, patience 50) under the
same wall-clock budget, then its best validation epoch (RUN/best) is evaluated by `vaelab eval`
with k importance samples on the test images. Adds its rows to benchmarks/results/
reproduce_fashion.json, replacing earlier rows of the same model, budget, rate, decay, seed,
test setting, precision and processor, so the runs of one table can be measured one at a time
(`--only "VAE + VampPrior (K=500)" --budget 60m`). Each row names its CPU (`cpu`): timings, and
so what a wall-clock budget buys, differ from one machine to another.

vaelab's additions to the published recipe, each recorded in the row: `--lr-decay 0.5` keeps the
learning rate constant for the first half of the budget and then lets it fall linearly to 0 at its
end; `--lr 1e-3` starts from another rate than the published 5e-4; `--seed` another seed;
`--pseudo-inputs K` gives the VampPrior rows K pseudo-inputs instead of the published 500 (the
row's label then says K=..., and `--only` takes either label); `--precision bf16` trains in
bfloat16 autocast (`vaelab train --precision`; the evaluation stays float32). The row also
records the recipe's `test_every` (rows from before it was 0 scored the test set every epoch,
which took about 56 s of a 30-minute VAE run). `--epochs N` trains N epochs instead of a
wall-clock budget; a run folder that is there already goes on where it stopped (`vaelab train
--resume`), or, when it is done, is only evaluated; `--reuse-eval` takes the numbers of an
evaluation already in RUN/best/eval.json (one of the same k over all the test images, written
after the weights) instead of evaluating again. Each row records the whole evaluation's seconds
and the k-sample estimate's alone (`is_seconds`, what the protocol's 5-minute target counts).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import torch

from bench import cpu_model
from vaelab.cli import main as vaelab
from vaelab.evaluation.run_eval import evaluate_run
from vaelab.run import PRECISIONS

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "fashion-mnist-protocol.toml"
RUNS = [  # (label, vaelab train arguments after the recipe, published test NLL in nats)
    ("VAE (Gaussian prior)", ["vae"], 228.70),
    ("IWAE k=5", ["iwae", "--k", "5"], None),
    ("VAE + VampPrior (K=500)", ["vae", "--prior", "vamp"], 227.35),
    ("IWAE k=5 + VampPrior (K=500)", ["iwae", "--k", "5", "--prior", "vamp"], None),
    # The two-layer HVAE of the VampPrior codebase (z1 = z2 = 40): the Exemplar-VAE table's
    # 227.37 +- 0.10 and 226.72 +- 0.08.
    ("HVAE (Gaussian prior)", ["hvae"], 227.37),
    ("HVAE + VampPrior (K=500)", ["hvae", "--prior", "vamp"], 226.72),
]
PUBLISHED = {"Exemplar VAE": 226.75}
TEST_IMAGES = 10_000  # Fashion-MNIST's test set
# A hierarchical model's own numbers from its evaluation (bottom layer first): a layer whose KL
# and active units are 0 has collapsed onto its prior.
LAYER_NUMBERS = ("kl_per_layer", "active_units_per_layer")


def earlier_evaluation(best: Path, k: int, limit: int | None) -> dict:
    """RUN/best/eval.json when it holds an evaluation with k samples of the images asked for,
    written after the weights it evaluates; a one-line refusal otherwise."""
    path, weights = best / "eval.json", best / "model.safetensors"
    if not path.is_file():
        raise SystemExit(f"--reuse-eval: {path} is missing (run without --reuse-eval)")
    result = json.loads(path.read_text())
    images = limit or TEST_IMAGES
    if (result.get("k"), result.get("images"), result.get("split")) != (k, images, "test"):
        raise SystemExit(
            f"--reuse-eval: {path} holds k={result.get('k')} on {result.get('images')} "
            f"{result.get('split')} images, not k={k} on {images} test images"
        )
    if path.stat().st_mtime < weights.stat().st_mtime:
        raise SystemExit(f"--reuse-eval: {path} is older than {weights}: evaluate again")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--budget", default="30m", help="wall-clock training budget per model")
    parser.add_argument(
        "--epochs", type=int, help="train this many epochs instead of a wall-clock budget"
    )
    parser.add_argument("--seed", type=int, help="the run's seed (default: the recipe's 0)")
    parser.add_argument(
        "--lr-decay",
        type=float,
        default=0.0,
        help="vaelab's addition to the protocol: the learning rate falls "
        "linearly to 0 over this last share of the budget (0: as published)",
    )
    parser.add_argument(
        "--lr", type=float, help="vaelab's addition: Adam's rate (default: the recipe's 5e-4)"
    )
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--limit", type=int, help="evaluate the first N test images only")
    parser.add_argument(
        "--reuse-eval",
        action="store_true",
        help="take a finished run's numbers from its RUN/best/eval.json instead of evaluating",
    )
    parser.add_argument(
        "--pseudo-inputs",
        type=int,
        help="vaelab's addition: the VampPrior rows' K (default: the published 500)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="vaelab's addition: bf16 trains in bfloat16 autocast (evaluation stays float32)",
    )
    parser.add_argument("--only", help="labels of RUNS to run, separated by ;")
    parser.add_argument("--runs", default="runs/fashion-protocol")
    parser.add_argument("--out", default="benchmarks/results/reproduce_fashion.json")
    args = parser.parse_args()
    rows = []
    for label, train_args, published in RUNS:
        # --only takes the labels as RUNS lists them, or as --pseudo-inputs writes them.
        listed = label
        if args.pseudo_inputs is not None and "vamp" in train_args:
            label = label.replace("K=500", f"K={args.pseudo_inputs}")
            train_args = [*train_args, "--pseudo-inputs", str(args.pseudo_inputs)]
        if args.only and not {listed, label} & set(args.only.split(";")):
            continue
        name = "-".join(a.strip("-") for a in train_args)
        budget = ["--time-budget", args.budget]
        if args.epochs:
            name, budget = f"{name}-e{args.epochs}", ["--epochs", str(args.epochs)]
        if args.lr_decay:
            name += f"-decay{args.lr_decay:g}"
        if args.lr is not None:
            name += f"-lr{args.lr:g}"
        if args.seed is not None:
            name += f"-seed{args.seed}"
        if args.precision != "fp32":
            name += f"-{args.precision}"
        out = Path(args.runs) / name
        argv = [
            "train",
            train_args[0],
            "--config",
            str(RECIPE),
            *train_args[1:],
            *budget,
            "--lr-decay",
            str(args.lr_decay),
            "--out",
            str(out),
            "--quiet",
            "--no-report",
        ]
        precision = None if args.precision == "fp32" else args.precision  # fp32: the default
        extra = (("--data-dir", args.data_dir), ("--lr", args.lr), ("--seed", args.seed),
                 ("--precision", precision))  # fmt: skip
        for flag, value in extra:
            if value is not None:
                argv += [flag, str(value)]
        if (out / "train_state.json").exists():  # a run interrupted before: it goes on exactly
            state = json.loads((out / "train_state.json").read_text())
            planned = json.loads((out / "config.json").read_text())["train"]["epochs"]
            done = state.get("stopped") or state["epoch"] >= planned
            argv = None if done else ["train", train_args[0], "--resume", str(out), "--quiet",
                                      "--no-report"]  # fmt: skip
        if argv and args.reuse_eval:
            raise SystemExit(f"--reuse-eval: {out} has not finished training: nothing to reuse")
        if argv and vaelab(argv) != 0:
            raise SystemExit(f"training failed: vaelab {' '.join(argv)}")
        state = json.loads((out / "train_state.json").read_text())
        train = json.loads((out / "config.json").read_text())["train"]
        if args.reuse_eval:
            result, seconds = earlier_evaluation(out / "best", args.k, args.limit), None
        else:
            start = time.perf_counter()
            result = evaluate_run(out / "best", k=args.k, limit=args.limit)
            seconds = round(time.perf_counter() - start)
        row = {"model": label, "published_nll": published,
               "budget": f"{args.epochs} epochs" if args.epochs else args.budget,
               "lr": train["lr"], "lr_decay": train["lr_decay"], "seed": train["seed"],
               "test_every": train.get("test_every", 1),  # before the field: every epoch
               "precision": train.get("precision", "fp32"), "cpu": cpu_model(),
               "train_seconds": round(state["seconds"]), "epochs": state["epoch"],
               "best_epoch": state["best_epoch"], "stopped": state.get("stopped"),
               "best_valid_neg_elbo": state["best_valid"], "test_neg_elbo": result["neg_elbo"],
               "test_nll": result["nll"], "test_nll_se": result["nll_se"],
               "test_images": result["images"], "k": args.k,
               "eval_seconds": seconds, "is_seconds": result.get("is_seconds"),
               "date": datetime.date.today().isoformat()}  # fmt: skip
        row.update({key: result[key] for key in LAYER_NUMBERS if key in result})
        rows.append(row)
        gap = "" if published is None else f" (published {published:.2f})"
        print(f"{label}: test NLL {row['test_nll']:.2f} +- {row['test_nll_se']:.2f}{gap}, "
              f"{row['epochs']} epochs in {row['train_seconds']} s", flush=True)  # fmt: skip
    machine = {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
               "platform": platform.platform(), "processor": cpu_model()}  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def key(row: dict) -> tuple:
        fields = ("model", "budget", "lr", "lr_decay", "seed", "test_every")
        return (*(row[k] for k in fields), row.get("precision", "fp32"), row.get("cpu"))

    new = {key(r) for r in rows}
    kept = json.loads(out.read_text())["rows"] if out.exists() else []
    rows = [r for r in kept if key(r) not in new] + rows
    out.write_text(json.dumps({"machine": machine, "published_others": PUBLISHED, "rows": rows},
                              indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
