"""`vaelab export`: the ONNX graphs against PyTorch under onnxruntime, the safetensors round
trip, the explorer page of a run, the errors, and the onnxruntime script of docs/export.md."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from conftest import tiny_config
from vaelab.cli import main
from vaelab.distributions import DiagonalGaussian
from vaelab.errors import VaelabError
from vaelab.evaluation.diagnostics import posterior_means
from vaelab.export import FORMATS, export_run
from vaelab.models import build_model
from vaelab.run import (
    DataConfig,
    RunConfig,
    TrainConfig,
    load_run,
    read_config,
    run_binarization,
)
from vaelab.run import (
    test_set as run_test_set,
)
from vaelab.training.trainer import train
from vaelab.viz.run_report import explorer_plane

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("onnxscript", reason="onnxscript is not installed")

DOC = Path(__file__).resolve().parents[1] / "docs" / "export.md"
TOLERANCE = 1e-5
RUNS = {
    "mlp": ("vae", "mlp", {}),
    "gated": ("vae", "gated", {}),
    "conv": ("vae", "conv", {"latent_dim": 3}),
    "cvae": ("cvae", "mlp", {}),  # FiLM: the label's per-layer path
    "ae": ("ae", "conv", {"likelihood": "continuous-bernoulli"}),  # a point-mass posterior
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_data):
    root = tmp_path_factory.mktemp("export-runs")
    for key, (name, net, changes) in RUNS.items():
        config = RunConfig(
            model=name,
            model_config=tiny_config(name, net, **changes),
            data=DataConfig(dataset="mnist-sample"),
            train=TrainConfig(epochs=1, batch_size=64),
        )
        train(config, root / key, max_steps=3, quiet=True, data=small_data)
    return root


def session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def inputs_for(model, first: str, n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    cfg = model.config
    if first == "x":
        feed = {"x": torch.rand(n, *cfg.image_shape, generator=g).round()}
    else:
        feed = {"z": 2 * torch.randn(n, cfg.latent_dim, generator=g)}
    if cfg.num_classes:
        feed["label"] = F.one_hot(torch.randint(cfg.num_classes, (n,), generator=g), 10).float()
    return feed


def run_onnx(path: Path, feed: dict[str, torch.Tensor]) -> list[np.ndarray]:
    return session(path).run(None, {k: v.numpy() for k, v in feed.items()})


def labels_of(feed):
    return feed["label"].argmax(-1) if "label" in feed else None


@pytest.mark.parametrize("key", list(RUNS))
def test_onnx_equals_pytorch_for_any_batch(runs, tmp_path, key):
    _, model = load_run(runs / key)
    written = export_run(runs / key, "onnx", tmp_path)
    assert sorted(p.name for p in written) == ["decoder.onnx", "encoder.onnx"]
    for n in (1, 7):  # the batch dimension is dynamic
        feed = inputs_for(model, "z", n)
        (image,) = run_onnx(tmp_path / "decoder.onnx", feed)
        with torch.no_grad():
            expected = model.decode(feed["z"], labels_of(feed)).mean
        assert image.shape == (n, 1, 28, 28)
        assert np.abs(image - expected.numpy()).max() < TOLERANCE

        feed = inputs_for(model, "x", n)
        outputs = run_onnx(tmp_path / "encoder.onnx", feed)
        with torch.no_grad():
            q = model.encode(feed["x"], labels_of(feed))
        expected = [q.mean, q.logvar] if isinstance(q, DiagonalGaussian) else [q.mean]
        assert len(outputs) == len(expected)
        for got, want in zip(outputs, expected, strict=True):
            assert got.shape == (n, model.config.latent_dim)
            assert np.abs(got - want.numpy()).max() < TOLERANCE


def test_conditional_graphs_take_the_one_hot_label(runs, tmp_path):
    export_run(runs / "cvae", "onnx", tmp_path)
    names = {f: [i.name for i in session(tmp_path / f).get_inputs()] for f in
             ("decoder.onnx", "encoder.onnx")}  # fmt: skip
    assert names == {"decoder.onnx": ["z", "label"], "encoder.onnx": ["x", "label"]}
    assert session(tmp_path / "decoder.onnx").get_inputs()[1].shape[1] == 10
    z = np.zeros((2, 2), np.float32)
    one_hot = np.eye(10, dtype=np.float32)[[3, 8]]
    (image,) = session(tmp_path / "decoder.onnx").run(None, {"z": z, "label": one_hot})
    assert np.abs(image[0] - image[1]).max() > 1e-3  # the same z, another digit


def test_safetensors_round_trip(runs, tmp_path):
    _, model = load_run(runs / "cvae")
    written = export_run(runs / "cvae", "safetensors", tmp_path)
    assert [p.name for p in written] == ["weights.safetensors", "model.json"]
    tensors = load_file(tmp_path / "weights.safetensors")
    assert tensors.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(tensors[key], value)

    described = json.loads((tmp_path / "model.json").read_text())
    config = RunConfig.from_json({"model": described["model"],
                                  "model_config": described["model_config"]})  # fmt: skip
    rebuilt = build_model(config.model, config.model_config)
    rebuilt.load_state_dict(tensors, strict=True)
    z, y = torch.randn(4, 2), torch.arange(4)
    with torch.no_grad():
        assert torch.equal(rebuilt.decode(z, y).mean, model.decode(z, y).mean)
    ops = described["decoder"]["ops"] + described["encoder"]["ops"]
    named = {op[k] for op in ops for k in ("w", "b") if op.get(k)}
    assert named <= tensors.keys() and "decoder.films.0.linear.weight" in named
    assert [op["op"] for op in described["decoder"]["ops"]] == ["concat", "linear", "relu",
                                                                "film", "linear"]  # fmt: skip
    assert described["decoder"]["mean"] == "sigmoid"


def spec_of(page: str) -> dict:
    """The explorer's spec, as the page's script mounts it."""
    data = re.search(r"previousElementSibling, (\{.*\})\);</script>", page).group(1)
    return json.loads(data)


def test_html_page_of_a_run(runs, tmp_path):
    (page,) = export_run(runs / "conv", "html", tmp_path, lang="ko")
    assert page.name == "explorer.html"
    spec = spec_of(page.read_text(encoding="utf-8"))
    config, model = load_run(runs / "conv")
    x, y, _ = run_test_set(config, run_binarization(config, read_config(runs / "conv")[1]))
    codes = posterior_means(model, x, y)
    assert spec["lang"] == "ko" and spec["latent_dim"] == 3
    assert spec["plane"] == list(explorer_plane(model, x, y))
    assert len(spec["points"]["xy"]) == min(len(x), 2000)
    assert spec["points"]["xy"][0] == pytest.approx(codes[0, spec["plane"]].tolist(), abs=1e-4)
    assert set(spec["points"]["labels"]) == set(range(10))
    assert spec["encoder"] is not None


def test_the_export_command_writes_each_format(runs, tmp_path, capsys):
    for fmt in FORMATS:
        assert (
            main(["export", str(runs / "mlp"), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
        )
    printed = capsys.readouterr().out
    for name in ("explorer.html", "encoder.onnx", "decoder.onnx", "weights.safetensors"):
        assert name in printed
    assert main(["export", str(runs / "mlp"), "--format", "zip"]) == 2


def test_bad_input_is_one_clear_error(runs, tmp_path):
    with pytest.raises(VaelabError, match="export format is 'zip': expected one of html, onnx, "
                                          "safetensors") as err:  # fmt: skip
        export_run(runs / "mlp", "zip", tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(VaelabError, match="is not a vaelab run: it has no config.json") as err:
        export_run(tmp_path, "onnx", tmp_path / "out")
    assert "\n" not in str(err.value)
    (tmp_path / "file").write_text("")
    with pytest.raises(VaelabError, match="is a file: expected a folder"):
        export_run(runs / "mlp", "html", tmp_path / "file")


def doc_script() -> str:
    """The one ```python block of docs/export.md under 'Decode a z with onnxruntime'."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Decode a z with onnxruntime") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.parametrize("key", ["mlp", "cvae"])
def test_the_docs_onnxruntime_script_runs(runs, tmp_path, key):
    export_run(runs / key, "onnx", tmp_path / "onnx")  # where the doc's commands write it
    (tmp_path / "decode.py").write_text(doc_script())
    done = subprocess.run([sys.executable, "decode.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "(1, 1, 28, 28)" in done.stdout
    assert (tmp_path / "decoded.png").is_file()
