"""One rank of a data-parallel run for tests/test_distributed.py.

    python tests/dist_worker.py SPEC [VAELAB ARGS...]

run under torchrun, or with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set by the test.
With VAELAB ARGS it runs the `vaelab` command line; without, it trains SPEC["runs"] through the
Python API in one process group. SPEC is JSON, with test-only behaviour:
  no_noise  reparameterized samples are the posterior mean and the AAE's "prior samples" a fixed
            function of its codes, row by row: training is then deterministic, so a run on two
            ranks can be compared with one process on the same sample order;
  die_at    [rank, step, signal]: in torchrun's first attempt that rank sends itself the signal
            just before that step;
  audit     a folder: ranks > 0 record every write under it and exit 3 if there was one;
  runs      [{"model", "batch_size", "out"}] trained on SPEC["data"] (API mode); ranks > 0
            save their final weights to SPEC["dump"]/rankR-OUTNAME.safetensors.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

import laplace_vae  # the test-only model, as in conftest.py
from vaelab.data import ImageData
from vaelab.distributions import DiagonalGaussian
from vaelab.models import MODELS
from vaelab.models.aae import AAE
from vaelab.run import DataConfig, RunConfig, TrainConfig


def run_config(
    model: str, dataset: str, data: ImageData, epochs: int = 2, batch_size: int = 64
) -> RunConfig:
    """A tiny run: 2-D latent, one hidden layer of 32, grayscale pixels."""
    cls = MODELS[model]
    fields = {"image_shape": data.image_shape, "latent_dim": 2, "hidden": (32,)}
    fields.update(cls.fields_from_data(data.num_classes))
    return RunConfig(
        model=model,
        model_config=cls.config_class(**fields),
        data=DataConfig(dataset=dataset, binarization="none"),
        train=TrainConfig(epochs=epochs, batch_size=batch_size),
    )


def mean_sample(self, sample_shape=(), generator=None):
    return self.mean.expand(tuple(sample_shape) + self.mean.shape)


def fixed_adversarial(self, codes, y):
    prior = torch.tanh(3 * codes.detach().flip(-1))  # a function of each row alone
    return self.discriminate(prior, y), self.discriminate(codes, y)


def no_noise(setattr_=setattr) -> None:
    setattr_(DiagonalGaussian, "rsample", mean_sample)
    setattr_(laplace_vae.Laplace, "rsample", mean_sample)
    setattr_(AAE, "adversarial", fixed_adversarial)


def die_at(rank: int, step: int, signum: int) -> None:
    from vaelab.training.trainer import Trainer

    real = Trainer.train_step

    def train_step(self, *args, **kwargs):
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if self.dist.rank == rank and self.state.step == step and first_attempt:
            os.kill(os.getpid(), signum)
        return real(self, *args, **kwargs)

    Trainer.train_step = train_step


def audit_writes(folder: str, seen: list[str]) -> None:
    """Record opens for writing, folder creations, renames and removals under `folder`."""
    root = os.path.realpath(folder)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    changes = ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink", "os.link")

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = bool(flags & write_flags) or any(c in (mode or "") for c in "wax+")
        elif event in changes:
            path, writing = args[0], True
        else:
            return
        if not writing or not isinstance(path, str | bytes | os.PathLike):
            return
        if os.path.realpath(os.fsdecode(path)).startswith(root):
            seen.append(f"{event} {os.fsdecode(path)}")

    sys.addaudithook(hook)


def train_runs(spec: dict) -> int:
    from safetensors.torch import save_file

    from vaelab.data import load_dataset
    from vaelab.training import distributed
    from vaelab.training.trainer import train

    data = load_dataset(spec["data"])
    dist = distributed.setup(spec.get("timeout", 60))
    try:
        for run in spec["runs"]:
            config = run_config(run["model"], spec["data"], data, batch_size=run["batch_size"])
            trainer = train(config, run["out"], quiet=True, data=data)
            if dist.rank:
                dump = Path(spec["dump"]) / f"rank{dist.rank}-{Path(run['out']).name}.safetensors"
                save_file(trainer.model.state_dict(), dump)
    finally:
        distributed.shutdown()
    return 0


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    if spec.get("no_noise"):
        no_noise()
    if "die_at" in spec:
        die_at(*spec["die_at"])
    seen: list[str] = []
    if spec.get("audit") and int(os.environ.get("RANK", "0")) > 0:
        audit_writes(spec["audit"], seen)
    if len(argv) > 1:
        from vaelab.cli import main as vaelab

        code = vaelab(argv[1:])
    else:
        code = train_runs(spec)
    if seen:
        print("a rank other than 0 wrote:", *seen[:10], sep="\n  ", file=sys.stderr)
        return 3
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
