"""The latent explorer in one self-contained HTML page: no server, no network, works from file://.

The decoder of a trained model (and, where embedded, its encoder) runs in plain JavaScript
(explorer_static/explorer.js) from weights embedded in the page as base64 of little-endian
float16 or float32. The layer sequence is read off the module structure of vaelab.nets (MLP
with ReLU or tanh, gated MLP, conv; the one-hot label concatenated at the input and, with FiLM,
a per-layer scale and shift) and the weights off the nets' state_dict, so the page computes
exactly what `model.decode(z, y).mean` does. The page's text is English or Korean.

Weights: float16 halves the page. Measured on models trained 1-3 epochs on mnist-sample (20-D
latent, 400 units, the page's own decode at 200 test codes against PyTorch): a page of 1.79 MB
against 3.53 MB with the MLP encoder, 0.91 against 1.77 MB without; max abs pixel error
2.1e-4 (MLP), 1.4e-4 (gated), 6e-5 (conv), 1.8e-4 (CVAE) from float16, under 3e-7 from
float32. `weights="auto"` measures float16's error for the model at hand, at test codes and
across the plane, and keeps float16 for the large tensors while it stays under
FLOAT16_TOLERANCE (a small first layer, whose error every later layer carries, goes back to
float32 first).
"""

from __future__ import annotations

import base64
import functools
import html
import json
from collections.abc import Sequence
from importlib import resources

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from vaelab.distributions import (
    BernoulliHead,
    ContinuousBernoulliHead,
    GaussianHead,
    LikelihoodHead,
)
from vaelab.errors import VaelabError
from vaelab.models import Model
from vaelab.nets import (
    HIDDEN_OUTPUTS,
    ConvDecoder,
    ConvEncoder,
    FiLM,
    GatedDense,
    MLPDecoder,
    MLPEncoder,
)

LANGS = ("en", "ko")
WEIGHT_DTYPES = ("auto", "float16", "float32")
FLOAT16_TOLERANCE = 5e-4  # max abs change of a decoded pixel that "auto" accepts from float16
SMALL_TENSOR = 4096  # tensors smaller than this stay float32 under "auto" (biases, FiLM, ...)
MAX_POINTS = 2000  # test codes drawn on the plane (evenly spaced through the ones given)
PROBES = 256  # codes (plus a 9 x 9 grid over the plane) at which "auto" measures float16's error
SIMPLE_LAYERS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Flatten: "flatten"}


@functools.cache
def _static(name: str) -> str:
    return resources.files("vaelab.viz").joinpath("explorer_static", name).read_text("utf-8")


def explorer_text(lang: str) -> dict[str, str]:
    """The page's strings in `lang` ("en" or "ko")."""
    if lang not in LANGS:
        raise VaelabError(f"explorer language is {lang!r}: expected one of {', '.join(LANGS)}")
    return json.loads(_static("text.json"))[lang]


class TensorPack:
    """Every tensor the page needs, by index (the ops refer to them), with its state_dict key."""

    def __init__(self) -> None:
        self.tensors: list[Tensor] = []
        self.keys: list[str] = []

    def add(self, t: Tensor | None, key: str) -> int:
        if t is None:
            return -1  # a layer without a bias
        self.tensors.append(t.detach().cpu().float())
        self.keys.append(key)
        return len(self.tensors) - 1

    def encode(self, half: set[str]) -> list[dict]:
        """Base64 of each tensor, little-endian: float16 for the keys in `half`, else float32."""
        out = []
        for key, t in zip(self.keys, self.tensors, strict=True):
            dtype = "float16" if key in half else "float32"
            raw = t.numpy().ravel().astype(np.dtype(dtype).newbyteorder("<")).tobytes()
            out.append({"dtype": dtype, "data": base64.b64encode(raw).decode("ascii")})
        return out


def _geometry(layer: nn.Conv2d | nn.ConvTranspose2d) -> dict:
    """k, stride and padding of a square, ungrouped conv (the only kind nets.py builds)."""
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    square = not isinstance(p, str) and len({*k}) == len({*s}) == len({*p}) == 1
    if not square or layer.groups != 1 or set(layer.dilation) != {1}:
        raise VaelabError(f"the explorer runs square, ungrouped convs only, not {layer}")
    return {"in": layer.in_channels, "out": layer.out_channels, "k": k[0], "stride": s[0],
            "pad": p[0]}  # fmt: skip


class _NetReader:
    """One of nets.py's encoders or decoders as the page's op list (explorer.js runs it)."""

    def __init__(self, net: nn.Module, part: str, cond_dim: int, pack: TensorPack):
        self.state, self.part, self.cond_dim, self.pack = net.state_dict(), part, cond_dim, pack
        self.names = {id(m): name for name, m in net.named_modules()}

    def tensors(self, module: nn.Module) -> dict[str, int]:
        keys = {"w": f"{self.names[id(module)]}.weight", "b": f"{self.names[id(module)]}.bias"}
        return {
            k: self.pack.add(self.state.get(key), f"{self.part}.{key}") for k, key in keys.items()
        }

    def linear(self, layer: nn.Linear) -> dict:
        return {"op": "linear", "in": layer.in_features, "out": layer.out_features,
                **self.tensors(layer)}  # fmt: skip

    def layer(self, layer: nn.Module) -> dict:
        if isinstance(layer, nn.Linear):
            return self.linear(layer)
        if isinstance(layer, GatedDense):  # value * sigmoid(gate) from one linear layer
            return {**self.linear(layer.linear), "op": "gated",
                    "out": layer.linear.out_features // 2}  # fmt: skip
        if isinstance(layer, nn.ConvTranspose2d):
            outpad = set(layer.output_padding)
            if len(outpad) != 1:
                raise VaelabError(f"the explorer runs square transposed convs only, not {layer}")
            return {"op": "deconv", **_geometry(layer), "outpad": outpad.pop(),
                    **self.tensors(layer)}  # fmt: skip
        if isinstance(layer, nn.Conv2d):
            return {"op": "conv", **_geometry(layer), **self.tensors(layer)}
        if type(layer) in SIMPLE_LAYERS:
            return {"op": SIMPLE_LAYERS[type(layer)]}
        raise VaelabError(f"the explorer cannot run a {type(layer).__name__} layer in JavaScript")

    def film(self, film: FiLM) -> dict:
        lin = film.linear
        return {"op": "film", "cond": lin.in_features, "features": lin.out_features // 2,
                **self.tensors(lin)}  # fmt: skip

    def sequence(self, layers: nn.Sequential, films: Sequence[FiLM] | None) -> list[dict]:
        """The layers' ops with films[i] after the i-th hidden output, as nets._run runs them."""
        ops, films = [], list(films or [])
        for layer in layers:
            ops.append(self.layer(layer))
            if films and isinstance(layer, HIDDEN_OUTPUTS):
                ops.append(self.film(films.pop(0)))
        return ops

    def ops(self, net: nn.Module) -> list[dict]:
        concat = [{"op": "concat"}] if self.cond_dim else []  # nets._with_condition
        if isinstance(net, MLPDecoder):
            return concat + self.sequence(net.net, net.films)
        if isinstance(net, ConvDecoder):
            films = list(net.films or [])
            reshape = {"op": "reshape", "shape": list(net.grid)}
            return (
                concat
                + self.sequence(net.dense, films[:1])
                + [reshape]
                + self.sequence(net.deconvs, films[1:])
            )
        if isinstance(net, MLPEncoder):
            return [{"op": "flatten"}, *concat, *self.sequence(net.net, net.films)]
        if isinstance(net, ConvEncoder):
            return [*self.sequence(net.convs, net.films), *concat, self.linear(net.dense)]
        raise VaelabError(f"the explorer cannot run a {type(net).__name__} in JavaScript")


def net_ops(net: nn.Module, part: str, cond_dim: int, pack: TensorPack) -> list[dict]:
    """The op list of `net` (the model's `part`, "decoder" or "encoder"), its tensors added to
    `pack`; every weight of the net is used once (a layer the reader skipped would leave some
    out)."""
    start = len(pack.tensors)
    ops = _NetReader(net, part, cond_dim, pack).ops(net)
    read = sum(t.numel() for t in pack.tensors[start:])
    expected = sum(t.numel() for t in net.state_dict().values())
    if read != expected:
        raise VaelabError(
            f"the explorer read {read} of the {expected} weights of the {type(net).__name__}: "
            "its layers are not the ones nets.py builds"
        )
    return ops


def head_mean(head: LikelihoodHead) -> str:
    """How the page turns the decoder's raw output into the likelihood's mean."""
    if isinstance(head, ContinuousBernoulliHead):
        return "continuous-bernoulli"
    if isinstance(head, (BernoulliHead, GaussianHead)):  # the Gaussian's mean is sigmoid(out)
        return "sigmoid"
    raise VaelabError(f"the explorer has no mean for the likelihood head {type(head).__name__}")


@torch.no_grad()
def _check_encoder_mean(model: Model) -> None:
    """The page takes the posterior mean as the encoder's first latent_dim outputs."""
    c, h, w = model.config.image_shape
    device = next(model.parameters()).device
    x = torch.rand(2, c, h, w, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.zeros(2, dtype=torch.long, device=device) if model.config.num_classes else None
    mean = model.encode(x, y).mean
    first = model.encoder(x, model.condition(y))[:, : model.config.latent_dim]
    if not torch.allclose(mean, first, atol=1e-6):
        raise VaelabError(
            f"the {model.name} model's posterior mean is not its encoder's first "
            f"{model.config.latent_dim} outputs: pass embed_encoder=False"
        )


@torch.no_grad()
def float16_error(model: Model, z: Tensor, y: Tensor | None, keys: set[str] | None = None) -> float:
    """Max abs change of the decoded means at z (N, D) when the decoder's weights named in
    `keys` (state_dict keys; None: all) are rounded to float16 (inf where one turns NaN)."""
    state = model.decoder.state_dict()
    keys = set(state) if keys is None else keys
    rounded = {k: v.half().to(v.dtype) if k in keys else v for k, v in state.items()}
    exact = model.decode(z, y).mean
    out = functional_call(model.decoder, rounded, (z, model.condition(y)))
    return (model.likelihood(out).mean - exact).abs().max().nan_to_num(float("inf")).item()


def choose_float16(model: Model, z: Tensor, y: Tensor | None, pack: TensorPack) -> set[str]:
    """The packed tensors "auto" stores in float16: those of SMALL_TENSOR entries or more, less
    the smallest decoder tensors (a small first layer feeds every later one) until the decoded
    means at z move by at most FLOAT16_TOLERANCE. The encoder's follow the size rule alone."""
    big = {k for k, t in zip(pack.keys, pack.tensors, strict=True) if t.numel() >= SMALL_TENSOR}
    sizes = dict(zip(pack.keys, (t.numel() for t in pack.tensors), strict=True))
    decoder = sorted((k for k in big if k.startswith("decoder.")), key=sizes.__getitem__)

    def error(keys: list[str]) -> float:
        return float16_error(model, z, y, {k.removeprefix("decoder.") for k in keys})

    while decoder and error(decoder) > FLOAT16_TOLERANCE:
        decoder.pop(0)
    return {k for k in big if not k.startswith("decoder.")} | set(decoder)


def _ranges(codes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Start point (the codes' mean) and the range of every dimension: the bulk of the codes
    (99.5 % of them) with a margin; a collapsed dimension gets a quarter of the widest range."""
    center = codes.mean(0)
    reach = 1.15 * torch.quantile((codes - center).abs(), 0.995, dim=0)
    reach = reach.clamp_min(max(0.25 * reach.max().item(), 1e-3))
    return center, center - reach, center + reach


def _probes(codes: Tensor, labels: Tensor | None, spec: dict, k: int):
    """Where "auto" measures float16's error: up to PROBES codes and a grid over the plane."""
    pick = torch.linspace(0, len(codes) - 1, min(PROBES, len(codes))).long()
    lo, hi = torch.tensor(spec["lo"]), torch.tensor(spec["hi"])
    grid = torch.tensor(spec["center"]).repeat(81, 1)
    ticks = torch.linspace(0, 1, 9)
    for d, t in zip(spec["plane"], torch.meshgrid(ticks, ticks, indexing="ij"), strict=True):
        grid[:, d] = lo[d] + t.flatten() * (hi[d] - lo[d])
    z = torch.cat([codes[pick], grid.to(codes)])
    if not k:
        return z, None
    picked = labels[pick] if labels is not None else torch.zeros(len(pick), dtype=torch.long)
    y = torch.cat([picked, torch.arange(81) % k]).to(codes.device)
    return z, y


def _check_inputs(model: Model, codes: Tensor, labels, class_names, plane) -> tuple[int, int]:
    d = model.config.latent_dim
    if d < 2:
        raise VaelabError(f"the explorer's plane needs a latent of 2 or more dimensions, got {d}")
    if codes.dim() != 2 or codes.shape[1] != d or not len(codes):
        raise VaelabError(f"codes have shape {tuple(codes.shape)}: expected (N, {d})")
    if labels is not None and labels.shape != (len(codes),):
        raise VaelabError(f"labels have shape {tuple(labels.shape)}: expected ({len(codes)},)")
    dims = tuple(int(i) for i in plane)
    if len(dims) != 2 or dims[0] == dims[1] or not all(0 <= i < d for i in dims):
        raise VaelabError(f"plane is {plane!r}: expected two different dimensions below {d}")
    needed = max(model.config.num_classes, 0 if labels is None else int(labels.max()) + 1)
    if class_names is not None and len(class_names) < needed:
        raise VaelabError(f"class_names has {len(class_names)} names: expected {needed}")
    return dims


def _points(codes: Tensor, labels: Tensor | None, dims: tuple[int, int], limit: int) -> dict:
    pick = torch.linspace(0, len(codes) - 1, min(limit, len(codes))).round().long()
    xy = codes[pick][:, list(dims)].tolist()
    return {
        "xy": [[round(v, 4) for v in row] for row in xy],
        "labels": None if labels is None else labels[pick].tolist(),
    }


@torch.no_grad()
def explorer_spec(
    model: Model,
    codes: Tensor,
    labels: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    plane: Sequence[int] = (0, 1),
    lang: str = "en",
    title: str | None = None,
    embed_encoder: bool = True,
    *,
    weights: str = "auto",
    max_points: int = MAX_POINTS,
) -> dict:
    """What explorer.js needs to run one explorer (JSON-able): the nets, their weights, the
    test codes on the plane and the text."""
    text = explorer_text(lang)
    if weights not in WEIGHT_DTYPES:
        raise VaelabError(f"weights is {weights!r}: expected one of {', '.join(WEIGHT_DTYPES)}")
    cfg, codes = model.config, codes.detach().float()
    labels = None if labels is None else labels.detach().long().cpu()
    dims = _check_inputs(model, codes, labels, class_names, plane)
    center, lo, hi = _ranges(codes.cpu())
    pack = TensorPack()
    spec = {
        "lang": lang, "text": text, "title": title,
        "latent_dim": cfg.latent_dim, "image_shape": list(cfg.image_shape),
        "num_classes": cfg.num_classes,
        "class_names": None if class_names is None else [str(n) for n in class_names],
        "plane": list(dims),
        "center": center.tolist(), "lo": lo.tolist(), "hi": hi.tolist(),
        "points": _points(codes.cpu(), labels, dims, max_points),
        "decoder": {"ops": net_ops(model.decoder, "decoder", cfg.num_classes, pack),
                    "head": head_mean(model.likelihood)},
        "encoder": None,
    }  # fmt: skip
    if embed_encoder:
        _check_encoder_mean(model)
        spec["encoder"] = {"ops": net_ops(model.encoder, "encoder", cfg.num_classes, pack)}
    half = _float16_keys(model, codes, labels, spec, pack, weights)
    spec["tensors"] = pack.encode(half)
    spec["facts"] = text["facts"].format(
        model=model.name, net=cfg.net if cfg.net != "mlp" else f"mlp ({cfg.activation})",
        latent=cfg.latent_dim, likelihood=cfg.likelihood, dtype=_dtype_note(pack, half),
        encoder=text["with_encoder"] if embed_encoder else "",
    )  # fmt: skip
    return spec


def _float16_keys(model, codes, labels, spec: dict, pack: TensorPack, weights: str) -> set[str]:
    """The packed tensors to store in float16, for the `weights` option."""
    if weights != "auto":
        return set(pack.keys) if weights == "float16" else set()
    device = next(model.parameters()).device
    z, y = _probes(codes.to(device), labels, spec, model.config.num_classes)
    return choose_float16(model, z, y, pack)


def _dtype_note(pack: TensorPack, half: set[str]) -> str:
    """float16, float32, or "float16 (96.6 %) / float32": the share of entries in float16."""
    total = sum(t.numel() for t in pack.tensors)
    share = sum(t.numel() for k, t in zip(pack.keys, pack.tensors, strict=True) if k in half)
    if share in (0, total):
        return "float16" if share else "float32"
    return f"float16 ({100 * share / total:.1f} %) / float32"


@functools.cache
def _runtime() -> str:
    js = _static("explorer.js").replace(
        '"__VAELAB_EXPLORER_CSS__"', json.dumps(_static("explorer.css"))
    )
    if "</script" in js.lower():
        raise VaelabError("explorer.js must not contain '</script'")  # it is inlined
    return js


def fragment_from_spec(spec: dict) -> str:
    """A <div> and the <script> that mounts the explorer on it; the runtime defines itself once
    per page, so several fragments can share one page."""
    data = json.dumps(spec, separators=(",", ":")).replace("<", "\\u003c")
    noscript = html.escape(spec["text"]["noscript"])
    return (
        f'<div class="vxe" lang="{spec["lang"]}"><noscript>{noscript}</noscript></div>\n'
        f"<script>{_runtime()}\n"
        f"VaelabExplorer.mount(document.currentScript.previousElementSibling, {data});</script>\n"
    )


def explorer_fragment(
    model: Model,
    codes: Tensor,
    labels: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    plane: Sequence[int] = (0, 1),
    lang: str = "en",
    title: str | None = None,
    embed_encoder: bool = True,
    **options,
) -> str:
    """The explorer as a <div> + <script> block for a self-contained HTML page (UTF-8); any
    number of them can share a page. `codes` (N, D): the test images' posterior means, drawn
    on the plane of the latent dimensions `plane`, coloured by `labels` (N,). `title`: a
    heading above it. `options`: weights ("auto", "float16", "float32"), max_points."""
    spec = explorer_spec(
        model, codes, labels, class_names, plane, lang, title, embed_encoder, **options
    )
    return fragment_from_spec(spec)


PAGE = """<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>body {{ margin: 0; padding: 16px 20px 40px; background: #f6f6f3; }}
h1 {{ margin: 0 0 4px; font: 600 20px system-ui, sans-serif; color: #1d1d1f; }}</style>
</head>
<body>
<h1>{title}</h1>
{fragment}</body>
</html>
"""


def explorer_html(
    model: Model,
    codes: Tensor,
    labels: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    plane: Sequence[int] = (0, 1),
    lang: str = "en",
    title: str | None = None,
    embed_encoder: bool = True,
    **options,
) -> str:
    """A standalone HTML page with one explorer (see explorer_fragment); `title` defaults to
    "vaelab latent explorer" in the page's language."""
    spec = explorer_spec(model, codes, labels, class_names, plane, lang, None, embed_encoder,
                         **options)  # fmt: skip
    title = title or spec["text"]["title"]
    return PAGE.format(lang=lang, title=html.escape(title), fragment=fragment_from_spec(spec))
