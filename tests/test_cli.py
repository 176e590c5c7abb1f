"""The `vaelab` command end to end on the shipped sample, in-process and fast."""

import json
import re
from pathlib import Path

import pytest

from vaelab.cli import main
from vaelab.models import MODELS

FAST = ["--hidden", "32", "--latent-dim", "2", "--quiet", "--batch-size", "256"]
FIGURES = (
    "reconstructions",
    "samples",
    "mixture_samples",
    "latent_scatter",
    "loss_curves",
    "manifold",
    "codes_over_prior",
    "latent_traversal",
)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaelab: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "vae", "--epochs", "1", "--out", str(out), *FAST]) == 0
    return out


def test_train_writes_the_run_and_a_report_with_every_figure(trained_run):
    for name in FIGURES:
        assert (trained_run / "figures" / f"{name}.png").is_file()
    html = (trained_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES)
    assert "negative ELBO" in html and "mnist-sample" in html
    config = json.loads((trained_run / "config.json").read_text())
    assert config["split"].startswith("first 9000")
    assert config["model_config"]["hidden"] == [32]


def test_max_steps_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "vae", "--epochs", "2", "--out", str(out), "--no-report", *FAST]
    assert main([*args, "--max-steps", "3"]) == 0
    assert json.loads((out / "train_state.json").read_text())["step"] == 3
    assert main(["train", "vae", "--resume", str(out), "--quiet", "--no-report"]) == 0
    state = json.loads((out / "train_state.json").read_text())
    assert (state["epoch"], state["step"]) == (2, 72)  # 9000 / 256 -> 36 steps per epoch
    assert main(["train", "vae", "--resume", str(out), "--epochs", "3", "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 3
    assert (out / "report.html").is_file()


def test_a_spent_time_budget_needs_a_larger_one_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "vae", "--epochs", "3", "--out", str(out), "--no-report", "--quiet", *FAST]
    assert main([*args, "--time-budget", "0.01s"]) == 0
    assert json.loads((out / "train_state.json").read_text())["epoch"] == 1
    resumed = ["train", "vae", "--resume", str(out), "--no-report", "--quiet"]
    assert main(resumed) == 2
    assert "whole time budget 0.01s: pass a larger --time-budget" in one_error_line(capsys)
    assert main([*resumed, "--time-budget", "none"]) == 2
    assert "--time-budget none on --resume: a run keeps its time budget" in one_error_line(capsys)
    assert main([*resumed, "--lr-decay", "0.5"]) == 2
    assert "--lr-decay 0.5 differs from the resumed run's 0.0" in one_error_line(capsys)
    assert main([*resumed, "--time-budget", "1h"]) == 0
    assert json.loads((out / "train_state.json").read_text())["epoch"] == 3
    assert json.loads((out / "config.json").read_text())["train"]["time_budget"] == "1h"


def test_sample(trained_run, tmp_path):
    png = tmp_path / "s.png"
    assert main(["sample", str(trained_run), "--n", "16", "--out", str(png), "--quiet"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_file_and_flags(tmp_path):
    toml = tmp_path / "vae.toml"
    toml.write_text('model = "vae"\nlatent_dim = 3\nepochs = 1\nhidden = [16]\nbeta = 2.0\n')
    out = tmp_path / "run"
    argv = ["train", "vae", "--config", str(toml), "--latent-dim", "4", "--out", str(out)]
    assert main([*argv, "--max-steps", "2", "--quiet", "--no-report"]) == 0
    config = json.loads((out / "config.json").read_text())["model_config"]
    assert (config["latent_dim"], config["hidden"], config["beta"]) == (4, [16], 2.0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "vae", "--latent-dim", "two"], "--latent-dim is 'two': expected int"),
        (["train", "vae", "--beta", "-1"], "beta is -1.0"),
        (["train", "vae", "--dataset", "cifar"], "is unknown; expected one of mnist-sample"),
        (["train", "vae", "--binarization", "soft"], "binarization is 'soft'"),
        (["train", "vae", "--test-every", "-2"], "test_every is -2: expected an integer >= 0"),
        (["train", "vae", "--likelihood", "poisson"], "likelihood is 'poisson'"),
        (["train", "vae", "--net", "conv", "--hidden", "0"], "hidden"),
        (
            ["train", "vae", "--hidden", "400,abc"],
            "--hidden is [400, 'abc']: expected a list of int",
        ),
        (["train", "vae", "--resume", "/nonexistent/run"], "is not a vaelab run"),
        (["sample", "/nonexistent/run"], "is not a vaelab run"),
        (["train", "vae", "--config", "/nonexistent.toml"], "does not exist"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "r")] if argv[0] == "train" else argv) == 2
    assert message in one_error_line(capsys)


def test_bad_toml_key_and_resume_mismatch(trained_run, tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text("latent-dims = 2\n")
    assert main(["train", "vae", "--config", str(toml), "--out", str(tmp_path / "r")]) == 2
    assert "unknown key(s) latent-dims" in one_error_line(capsys)
    assert main(["train", "vae", "--resume", str(trained_run), "--latent-dim", "8"]) == 2
    assert "differs from the resumed run" in one_error_line(capsys)
    assert main(["train", "vae", "--out", str(trained_run), *FAST]) == 2
    assert "already holds a run" in one_error_line(capsys)


def test_argparse_errors_exit_2(capsys):
    assert main(["train"]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["train", "gan"]) == 2


def test_datasets_lists_every_name(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("mnist-sample", "mnist", "fashion-mnist", "kmnist"):
        assert re.search(rf"^{re.escape(name)}\s", out, re.M), name
    assert "shipped with vaelab" in out


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_every_model_trains_and_reports_on_both_nets(model, net, tmp_path):
    out = tmp_path / model
    small = ["--m", "2", "--k", "4"] if model in ("miwae", "piwae") else []  # not 8 x 8 samples
    argv = ["train", model, "--net", net, "--max-steps", "3", "--out", str(out), *FAST, *small]
    assert main(argv) == 0
    html = (out / "report.html").read_text()
    for name in ("reconstructions", "samples", "latent_scatter"):
        assert (out / "figures" / f"{name}.png").is_file()
    if getattr(MODELS[model], "conditional", False):
        assert "Class grid" in html and "Style transfer" in html
        assert main(["sample", str(out), "--label", "3", "--n", "4", "--quiet",
                     "--out", str(tmp_path / "three.png")]) == 0  # fmt: skip


def test_label_only_for_conditional_models(trained_run, tmp_path, capsys):
    assert main(["sample", str(trained_run), "--label", "3", "--out", str(tmp_path / "s.png")]) == 2
    assert "--label needs a conditional model" in one_error_line(capsys)


def test_the_fashion_protocol_recipe_is_recorded_in_the_run(tmp_path):
    recipe = Path(__file__).resolve().parents[1] / "configs" / "fashion-mnist-protocol.toml"
    out = tmp_path / "proto"
    # The recipe on the shipped sample (its data options overridden), for two steps.
    code = main(["train", "vae", "--config", str(recipe), "--dataset", "mnist-sample",
                 "--validation", "1000", "--max-steps", "2", "--out", str(out), "--quiet",
                 "--no-report"])  # fmt: skip
    assert code == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["data"]["binarization"] == "dynamic" and saved["data"]["test_seed"] == 777
    assert saved["data"]["validation"] == 1000
    assert saved["model_config"]["net"] == "gated" and saved["model_config"]["hidden"] == [300, 300]
    assert saved["model_config"]["latent_dim"] == 40
    train = saved["train"]
    assert (train["lr"], train["batch_size"], train["kl_warmup_epochs"]) == (5e-4, 100, 100)
    assert (train["early_stopping"], train["epochs"], train["test_every"]) == (50, 2000, 0)
