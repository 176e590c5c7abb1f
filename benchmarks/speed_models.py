"""Speed beyond the MLP VAE: the conv net, IWAE k=5, the AAE, and the k=5000 evaluation.

    python benchmarks/speed_models.py --data-dir ../shared/data/fashion-mnist

Each row is measured against a baseline in the same run, interleaved A B A B (median of the
per-pair ratios):
- training: vaelab's trainer vs the standard recipe's loop around the same vaelab model (a
  Dataset that builds each image through PIL, torch.utils.data.DataLoader, torch.optim.Adam
  with its defaults, one `loss.item()` per step), one epoch on the first --images training
  images, grayscale pixels, batch 128, Adam 1e-3. Same model, same maths: only the loop differs.
- evaluation: vaelab's importance sampler (`per_image_seeded` over `log_prob_estimate`) vs a
  plain batched loop (100 images at a time, 50 samples per model call through `log_weights`,
  torch's own threads), k=5000 on 1,000 test images, MLP 784-400-20. The FLOP ceiling is the
  decoder's and encoder's matmuls at the float32 rate measured here at the sampler's shapes.
Writes benchmarks/results/speed_models.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import vaelab
from bench import cpu_model
from recipe import ImageFolderLike
from vaelab.data import ImageData, binarize_fixed, load_dataset
from vaelab.evaluation.likelihood import iwae_bound, per_image_seeded
from vaelab.models import MODELS, Batch, StepContext, build_model
from vaelab.run import DataConfig, RunConfig, TrainConfig
from vaelab.training.trainer import train

ROWS = [  # (label, model, config changes)
    ("conv VAE (TF2 tutorial net)", "vae", {"net": "conv", "latent_dim": 2}),
    ("IWAE k=5, MLP 784-400-20", "iwae", {"k": 5}),
    ("AAE, MLP 784-400-20, normal prior", "aae", {}),
]


def config_for(name: str, changes: dict, image_shape) -> RunConfig:
    fields = {"image_shape": image_shape, **changes}
    return RunConfig(model=name, model_config=MODELS[name].config_class(**fields),
                     data=DataConfig(dataset="bench", binarization="none"),
                     train=TrainConfig(epochs=1, batch_size=128, lr=1e-3))  # fmt: skip


def recipe_loop(config: RunConfig, images: torch.Tensor, seed: int) -> float:
    """Images/s of the recipe's loop around the vaelab model (training loop only)."""
    torch.manual_seed(seed)
    model = build_model(config.model, config.model_config).train()
    loader = DataLoader(ImageFolderLike(images[:, 0].numpy()), batch_size=128, shuffle=True)
    optimizers = {p.name: torch.optim.Adam(p.parameters, lr=1e-3 * p.lr_scale)
                  for p in model.phases()}  # fmt: skip
    seen, start = 0, time.perf_counter()
    for x, _ in loader:
        for phase in model.phases():
            optimizers[phase.name].zero_grad()
            loss = model.loss(phase.name, Batch(x), StepContext()).loss
            loss.backward()
            loss.item()  # the recipe's running loss
            optimizers[phase.name].step()
        seen += len(x)
    return seen / (time.perf_counter() - start)


def vaelab_loop(config: RunConfig, data: ImageData, seed: int) -> float:
    config.train.seed = seed
    with tempfile.TemporaryDirectory() as tmp:
        train(config, Path(tmp) / "run", quiet=True, data=data)
        rows = [json.loads(v) for v in (Path(tmp) / "run/metrics.jsonl").read_text().splitlines()]
    return rows[-1]["train/samples_per_s"]


@torch.no_grad()
def plain_eval(model, x: torch.Tensor, k: int) -> float:
    """The batched plain loop: seconds for -log p(x) over x."""
    start = time.perf_counter()
    values = []
    for i in range(0, len(x), 100):
        xb = x[i : i + 100]
        parts = [torch.logsumexp(model.log_weights(xb, None, 50), 0) for _ in range(k // 50)]
        values.append(torch.logsumexp(torch.stack(parts), 0) - math.log(k))
    torch.cat(values).mean().item()
    return time.perf_counter() - start


@torch.no_grad()
def vaelab_eval(model, x: torch.Tensor, k: int) -> float:
    start = time.perf_counter()
    fn = lambda a, b, g: iwae_bound(model, a, b, k, generator=g)  # noqa: E731
    per_image_seeded(fn, x, None, seed=0, threads=torch.get_num_threads()).mean().item()
    return time.perf_counter() - start


def sampler_matmul_rate(seconds: float = 2.0, rows: int = 2000) -> float:
    """float32 FLOP/s of the sampler's decoder matmuls (rows x 20 -> 400 -> 784)."""
    z, w1, w2 = torch.randn(rows, 20), torch.randn(20, 400), torch.randn(400, 784)
    flops = 2 * rows * (20 * 400 + 400 * 784)
    for _ in range(5):
        (z @ w1).relu_() @ w2
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        (z @ w1).relu_() @ w2
        n += 1
    return n * flops / (time.perf_counter() - start)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    vaelab.flush_denormals()  # as the `vaelab` command does: before torch's first op
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--images", type=int, default=20000, help="training images per run")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--eval-images", type=int, default=1000)
    parser.add_argument("--out", default="benchmarks/results/speed_models.json")
    args = parser.parse_args()
    full = load_dataset(args.dataset, args.data_dir)
    n = args.images
    data = dataclasses.replace(full, train_images=full.train_images[:n],
                               train_labels=full.train_labels[:n],
                               test_images=full.test_images[:1000],
                               test_labels=full.test_labels[:1000])  # fmt: skip
    results = []
    for label, name, changes in ROWS:
        config = config_for(name, changes, data.image_shape)
        pairs = []
        for i in range(args.pairs):
            base = recipe_loop(config, data.train_images, i)
            ours = vaelab_loop(config_for(name, changes, data.image_shape), data, i)
            pairs.append({"recipe_loop": base, "vaelab": ours, "ratio": ours / base})
            print(f"{label} pair {i + 1}: recipe loop {base:7.0f}  vaelab {ours:7.0f} images/s  "
                  f"ratio {ours / base:.2f}", flush=True)  # fmt: skip
        results.append({"row": label, "unit": "training images/s", "pairs": pairs,
                        "recipe_loop": summary([p["recipe_loop"] for p in pairs]),
                        "vaelab": summary([p["vaelab"] for p in pairs]),
                        "ratio": summary([p["ratio"] for p in pairs])})  # fmt: skip

    torch.manual_seed(0)
    model = build_model("vae", MODELS["vae"].config_class(image_shape=data.image_shape)).eval()
    x = binarize_fixed(full.test_images[: args.eval_images], "dynamic", 777)
    rate = sampler_matmul_rate()
    flops = len(x) * args.k * 2 * (20 * 400 + 400 * 784) + len(x) * 2 * 784 * 400
    pairs = []
    for i in range(args.pairs):
        base, ours = plain_eval(model, x, args.k), vaelab_eval(model, x, args.k)
        pairs.append({"plain_loop_s": base, "vaelab_s": ours, "ratio": base / ours})
        print(f"evaluation pair {i + 1}: plain loop {base:6.1f} s  vaelab {ours:6.1f} s  "
              f"ratio {base / ours:.2f}", flush=True)  # fmt: skip
    seconds = summary([p["vaelab_s"] for p in pairs])
    results.append({"row": f"evaluation, k={args.k}, {len(x)} test images", "unit": "seconds",
                    "pairs": pairs, "plain_loop_s": summary([p["plain_loop_s"] for p in pairs]),
                    "vaelab_s": seconds, "ratio": summary([p["ratio"] for p in pairs]),
                    "samples_per_s": len(x) * args.k / seconds["median"],
                    "matmul_gflops": rate / 1e9, "ceiling_s": flops / rate})  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__,
               "platform": platform.platform(), "processor": cpu_model()}  # fmt: skip
    out.write_text(json.dumps({"machine": machine, "rows": results}, indent=2) + "\n")
    for r in results:
        print(r["row"], "ratio", round(r["ratio"]["median"], 2))


if __name__ == "__main__":
    main()
