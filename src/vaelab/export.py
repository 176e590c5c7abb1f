"""A trained run for use outside vaelab: `vaelab export RUN --format html|onnx|safetensors`.

- html: explorer.html, the server-free latent explorer (vaelab.viz.explorer) over the run's test
  set: its codes on the plane of the two latent dimensions with the largest variance.
- onnx: decoder.onnx (z [B, D] -> the likelihood's mean image [B, C, H, W]) and encoder.onnx
  (x [B, C, H, W] -> the posterior mean [B, D], and its log-variance where the posterior is
  Gaussian); a conditional model takes the one-hot label [B, K] as the second input `label`.
  The batch dimension is dynamic. Each graph is checked against PyTorch with onnxruntime where
  it is installed (the `export` extra: pip install 'vaelab[export]').
- safetensors: weights.safetensors (the model's state_dict) and model.json: the model's config
  and, for each net, its layer sequence naming the tensor each layer uses, so another framework
  can rebuild the nets without vaelab.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch import Tensor, nn

from vaelab.distributions import ContinuousBernoulliHead, DiagonalGaussian
from vaelab.errors import VaelabError
from vaelab.evaluation.diagnostics import posterior_means
from vaelab.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from vaelab.models import Model
from vaelab.run import load_run, read_config, run_binarization, test_set
from vaelab.viz.explorer import TensorPack, explorer_html, explorer_text, head_mean, net_ops
from vaelab.viz.run_report import explorer_plane

FORMATS = ("html", "onnx", "safetensors")
ONNX_CHECK_TOLERANCE = 1e-4  # max abs difference from PyTorch that the export accepts
EXPLORER_FILE, DECODER_ONNX, ENCODER_ONNX = "explorer.html", "decoder.onnx", "encoder.onnx"
WEIGHTS_FILE, MODEL_JSON = "weights.safetensors", "model.json"


def export_run(
    run_dir: str | Path, fmt: str, out: str | Path | None = None, *, lang: str = "en"
) -> list[Path]:
    """Write the run's export in format `fmt` (one of FORMATS) into the folder `out` (default
    RUN/export); returns the files written. `lang` ("en" or "ko"): the explorer page's text."""
    if fmt not in FORMATS:
        raise VaelabError(f"export format is {fmt!r}: expected one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    config, raw = read_config(run_dir)  # one clear error for a folder that is not a run
    _, model = load_run(run_dir)
    if fmt != "safetensors" and not model.portable_nets:
        raise VaelabError(
            f"{run_dir} is a {model.name} run, whose encode or decode is more than its two nets: "
            "it exports as safetensors only (--format safetensors)"
        )
    out = run_dir / "export" if out is None else Path(out)
    if out.exists() and not out.is_dir():
        raise VaelabError(f"export folder {out} is a file: expected a folder")
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "html":
        return [write_explorer(run_dir, config, raw, model, out / EXPLORER_FILE, lang)]
    if fmt == "onnx":
        return write_onnx(model, out)
    return write_safetensors(model, raw, out)


# ---- html


def write_explorer(run_dir: Path, config, raw: dict, model: Model, path: Path, lang: str) -> Path:
    x, y, names = test_set(config, run_binarization(config, raw))
    codes = posterior_means(model, x, y)
    title = f"{explorer_text(lang)['title']}: {run_dir.resolve().name}"
    page = explorer_html(model, codes, y, names, explorer_plane(model, x, y), lang, title)
    atomic_write_text(path, page)
    return path


# ---- onnx


class DecoderGraph(nn.Module):
    """z [B, D] (and the one-hot label [B, K]) -> the likelihood's mean [B, C, H, W]."""

    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, label: Tensor | None = None) -> Tensor:
        logits = self.model.decoder(z, label)
        if isinstance(self.model.likelihood, ContinuousBernoulliHead):
            # ONNX has no expm1: its exp(-l) - 1 in float32 loses the mean's 1e-4 near l = 0,
            # so this head's mean runs in float64 (the graph's output stays float32).
            return self.model.likelihood(logits.double()).mean.float()
        return self.model.likelihood(logits).mean


class EncoderGraph(nn.Module):
    """x [B, C, H, W] (and the one-hot label [B, K]) -> the posterior mean [B, D] (and its
    log-variance [B, D] where the posterior is Gaussian)."""

    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, label: Tensor | None = None):
        q = self.model.encode(x, None if label is None else label.argmax(-1))
        return (q.mean, q.logvar) if isinstance(q, DiagonalGaussian) else q.mean


@contextlib.contextmanager
def _quiet_export():
    """torch.onnx's own notices (missing torchvision ops, deprecations inside torch) are not
    the user's business; real failures still raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def onnx_graph(graph: nn.Module, inputs: dict[str, Tensor], outputs: list[str]) -> bytes:
    """The ONNX model of graph(*inputs) with a dynamic batch dimension."""
    batch = torch.export.Dim("batch")
    try:
        with _quiet_export():
            program = torch.onnx.export(
                graph.eval(),
                tuple(inputs.values()),
                input_names=list(inputs),
                output_names=outputs,
                dynamic_shapes=tuple({0: batch} for _ in inputs),
                external_data=False,
                dynamo=True,
                verbose=False,
            )
    except ModuleNotFoundError as err:
        raise VaelabError(
            f"ONNX export needs the package {err.name}: pip install 'vaelab[export]'"
        ) from err
    return program.model_proto.SerializeToString()


def example_inputs(model: Model, first: str, n: int, seed: int = 0) -> dict[str, Tensor]:
    """n random inputs for a graph whose first input is `first` ("x" or "z"), plus one-hot
    labels for a conditional model."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    inputs = {
        first: torch.rand(n, *cfg.image_shape, generator=g)
        if first == "x"
        else torch.randn(n, cfg.latent_dim, generator=g)
    }
    if cfg.num_classes:
        labels = torch.randint(cfg.num_classes, (n,), generator=g)
        inputs["label"] = F.one_hot(labels, cfg.num_classes).float()
    return inputs


@torch.no_grad()
def check_onnx(name: str, data: bytes, graph: nn.Module, inputs: dict[str, Tensor]) -> float:
    """Max abs difference of onnxruntime's outputs from PyTorch's (nan where onnxruntime is not
    installed); refuses a graph past ONNX_CHECK_TOLERANCE."""
    try:
        import onnxruntime
    except ModuleNotFoundError:
        return float("nan")
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    expected = graph(*inputs.values())
    expected = expected if isinstance(expected, tuple) else (expected,)
    error = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(got, expected, strict=True))
    if not error <= ONNX_CHECK_TOLERANCE:
        raise VaelabError(
            f"{name} differs from PyTorch by {error:.2g} (max abs) under onnxruntime: "
            f"expected at most {ONNX_CHECK_TOLERANCE}"
        )
    return error


def write_onnx(model: Model, out: Path) -> list[Path]:
    model = model.cpu().eval()
    gaussian = isinstance(model.encode(*_one_image(model)), DiagonalGaussian)
    graphs = [
        (ENCODER_ONNX, EncoderGraph(model), "x", ["mean", "logvar"] if gaussian else ["mean"]),
        (DECODER_ONNX, DecoderGraph(model), "z", ["mean"]),
    ]
    written = []
    for name, graph, first, outputs in graphs:
        data = onnx_graph(graph, example_inputs(model, first, 3), outputs)
        check_onnx(name, data, graph, example_inputs(model, first, 5, seed=1))
        atomic_write_bytes(out / name, data)
        written.append(out / name)
    return written


@torch.no_grad()
def _one_image(model: Model) -> tuple[Tensor, Tensor | None]:
    x = torch.zeros(1, *model.config.image_shape)
    return x, torch.zeros(1, dtype=torch.long) if model.config.num_classes else None


# ---- safetensors


def model_description(model: Model, raw: dict) -> dict:
    """model.json: the config and each net's layers, every tensor named by its key in
    weights.safetensors. Layouts are PyTorch's: Linear weight (out, in), Conv2d (out, in, k, k),
    ConvTranspose2d (in, out, k, k), images (C, H, W)."""
    cfg, pack = model.config, TensorPack()
    nets = {
        "decoder": net_ops(model.decoder, "decoder", cfg.num_classes, pack),
        "encoder": net_ops(model.encoder, "encoder", cfg.num_classes, pack),
    }
    for ops in nets.values():
        for op in ops:
            for key in ("w", "b"):
                if key in op:
                    op[key] = pack.keys[op[key]] if op[key] >= 0 else None
    gaussian = isinstance(model.encode(*_one_image(model)), DiagonalGaussian)
    return {
        "format": "vaelab-weights-1",
        "model": raw["model"],
        "model_config": raw["model_config"],
        "condition": "one-hot label of num_classes, joined to each net's input (op concat); "
        "op film: h * (1 + gamma) + beta with [gamma, beta] = linear(label)",
        "decoder": {"ops": nets["decoder"], "mean": head_mean(model.likelihood)},
        "encoder": {
            "ops": nets["encoder"],
            "outputs": "mean, logvar (halves)" if gaussian else "mean",
        },
    }


def write_safetensors(model: Model, raw: dict, out: Path) -> list[Path]:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(out / WEIGHTS_FILE, save(tensors, metadata={"format": "pt"}))
    atomic_write_json(out / MODEL_JSON, model_description(model, raw))
    return [out / WEIGHTS_FILE, out / MODEL_JSON]
