"""benchmarks/reproduce_fashion.py's bookkeeping: what it runs, resumes and records (the
training and the evaluation are replaced: the real runs take an hour)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_fashion.py"
sys.path.insert(0, str(SCRIPT.parent))  # the script imports its neighbour bench.py, as run
from bench import cpu_model  # noqa: E402  (benchmarks/bench.py)


@pytest.fixture
def script(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("reproduce_fashion", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []

    def fake_vaelab(argv):  # writes what a finished run leaves behind
        calls.append(argv)
        out = Path(argv[argv.index("--resume") + 1] if "--resume" in argv else
                   argv[argv.index("--out") + 1])  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        if "--resume" not in argv:
            epochs = int(argv[argv.index("--epochs") + 1]) if "--epochs" in argv else 2000
            train = {"lr": float(argv[argv.index("--lr") + 1]) if "--lr" in argv else 5e-4,
                     "lr_decay": float(argv[argv.index("--lr-decay") + 1]),
                     "seed": int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0,
                     "test_every": 0, "epochs": epochs}  # fmt: skip
            if "--precision" in argv:  # as config.json records it (runs before it had none)
                train["precision"] = argv[argv.index("--precision") + 1]
            (out / "config.json").write_text(json.dumps({"train": train}))
        epochs = json.loads((out / "config.json").read_text())["train"]["epochs"]
        state = {"epoch": min(epochs, 7), "best_epoch": 6, "best_valid": 230.0, "seconds": 12.5,
                 "stopped": None if epochs <= 7 else "time budget 30m spent"}  # fmt: skip
        (out / "train_state.json").write_text(json.dumps(state))
        return 0

    result = {"neg_elbo": 231.0, "nll": 229.0, "nll_se": 0.76, "images": 10}
    monkeypatch.setattr(module, "vaelab", fake_vaelab)
    monkeypatch.setattr(module, "evaluate_run", lambda run, k, limit: result)

    def run(*args):
        out = tmp_path / "rows.json"
        monkeypatch.setattr(sys, "argv", ["reproduce_fashion.py", "--runs", str(tmp_path / "runs"),
                                          "--out", str(out), *args])  # fmt: skip
        module.main()
        return json.loads(out.read_text())["rows"]

    run.module = module
    return run, calls, tmp_path / "runs"


def test_a_fresh_run_trains_with_the_recipe_and_records_its_settings(script):
    run, calls, runs = script
    rows = run("--only", "IWAE k=5 + VampPrior (K=500)", "--epochs", "7", "--lr", "1e-3",
               "--lr-decay", "0.5", "--seed", "3")  # fmt: skip
    (argv,) = calls
    assert argv[:2] == ["train", "iwae"] and argv[argv.index("--k") + 1] == "5"
    assert argv[argv.index("--prior") + 1] == "vamp" and "--time-budget" not in argv
    assert argv[argv.index("--out") + 1] == str(
        runs / "iwae-k-5-prior-vamp-e7-decay0.5-lr0.001-seed3"
    )
    (row,) = rows
    assert (row["budget"], row["lr"], row["lr_decay"], row["seed"]) == ("7 epochs", 1e-3, 0.5, 3)
    assert (row["test_every"], row["train_seconds"], row["test_nll"]) == (0, 12, 229.0)


def test_pseudo_inputs_change_the_vampprior_rows_only_and_name_them(script):
    run, calls, runs = script
    rows = run("--only", "VAE (Gaussian prior);VAE + VampPrior (K=250)", "--epochs", "3",
               "--pseudo-inputs", "250")  # fmt: skip
    plain, vamp = calls
    assert "--pseudo-inputs" not in plain
    assert vamp[vamp.index("--pseudo-inputs") + 1] == "250"
    assert vamp[vamp.index("--out") + 1] == str(runs / "vae-prior-vamp-pseudo-inputs-250-e3")
    assert [r["model"] for r in rows] == ["VAE (Gaussian prior)", "VAE + VampPrior (K=250)"]


def test_the_hvae_rows_train_hvae_and_record_each_layers_numbers(script, monkeypatch):
    run, calls, runs = script
    layers = {"kl_per_layer": [21.5, 3.25], "active_units_per_layer": [19, 11]}
    result = {"neg_elbo": 231.0, "nll": 229.0, "nll_se": 0.76, "images": 10, **layers}
    monkeypatch.setattr(run.module, "evaluate_run", lambda run, k, limit: result)
    rows = run("--only", "HVAE (Gaussian prior);HVAE + VampPrior (K=250)", "--epochs", "3",
               "--pseudo-inputs", "250")  # fmt: skip
    plain, vamp = calls
    assert plain[:2] == ["train", "hvae"] and "--prior" not in plain
    assert plain[plain.index("--out") + 1] == str(runs / "hvae-e3")
    assert vamp[:2] == ["train", "hvae"] and vamp[vamp.index("--prior") + 1] == "vamp"
    assert vamp[vamp.index("--out") + 1] == str(runs / "hvae-prior-vamp-pseudo-inputs-250-e3")
    assert [(r["model"], r["published_nll"]) for r in rows] == [
        ("HVAE (Gaussian prior)", 227.37), ("HVAE + VampPrior (K=250)", 226.72)]  # fmt: skip
    assert all(r["kl_per_layer"] == [21.5, 3.25] for r in rows)
    assert all(r["active_units_per_layer"] == [19, 11] for r in rows)


def test_precision_is_passed_named_and_keeps_rows_apart(script):
    run, calls, runs = script
    run("--only", "VAE (Gaussian prior)", "--epochs", "3")
    rows = run("--only", "VAE (Gaussian prior)", "--epochs", "3", "--precision", "bf16")
    plain, bf16 = calls
    assert "--precision" not in plain
    assert bf16[bf16.index("--precision") + 1] == "bf16"
    assert bf16[bf16.index("--out") + 1] == str(runs / "vae-e3-bf16")
    assert [r["precision"] for r in rows] == ["fp32", "bf16"]  # the fp32 row is kept beside it


def test_a_row_from_before_the_precision_field_is_replaced_by_its_fp32_rerun(script, tmp_path):
    run, calls, runs = script
    (old,) = run("--only", "VAE (Gaussian prior)", "--epochs", "3")
    del old["precision"]  # as the rows written before the field were
    (tmp_path / "rows.json").write_text(json.dumps({"rows": [old]}))
    rows = run("--only", "VAE (Gaussian prior)", "--epochs", "3")
    assert [r.get("precision") for r in rows] == ["fp32"]


def test_each_row_names_its_processor_and_rows_of_another_are_kept(script, tmp_path):
    run, calls, runs = script
    (old,) = run("--only", "VAE (Gaussian prior)", "--epochs", "3")
    assert old["cpu"] == cpu_model()
    old["cpu"] = "AMD EPYC (Zen 4)"  # the same run measured on another machine
    (tmp_path / "rows.json").write_text(json.dumps({"rows": [old]}))
    rows = run("--only", "VAE (Gaussian prior)", "--epochs", "3")
    assert [r["cpu"] for r in rows] == ["AMD EPYC (Zen 4)", cpu_model()]


def test_cpu_model_reads_the_first_processor_and_falls_back_without_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu family\t: 6\nmodel\t\t: 207\n"
                    "model name\t: Intel(R) Xeon(R) Processor\n\n"
                    "processor\t: 1\nmodel name\t: Another\n")  # fmt: skip
    assert cpu_model(info) == "Intel(R) Xeon(R) Processor (family 6, model 207)"
    assert cpu_model(tmp_path / "missing")  # platform's name: never empty


def test_an_interrupted_run_is_resumed_and_a_finished_one_only_evaluated(script):
    run, calls, runs = script
    out = runs / "vae-e9"
    out.mkdir(parents=True)
    train = {"lr": 5e-4, "lr_decay": 0.0, "seed": 0, "test_every": 0, "epochs": 9}
    (out / "config.json").write_text(json.dumps({"train": train}))
    (out / "train_state.json").write_text(json.dumps({"epoch": 4, "stopped": None}))
    run("--only", "VAE (Gaussian prior)", "--epochs", "9")
    assert calls == [["train", "vae", "--resume", str(out), "--quiet", "--no-report"]]
    run("--only", "VAE (Gaussian prior)", "--budget", "30m")  # a budgeted run, then done
    assert calls[-1][calls[-1].index("--time-budget") + 1] == "30m"
    calls.clear()
    rows = run("--only", "VAE (Gaussian prior)", "--budget", "30m")
    assert calls == [] and len(rows) == 2  # one row per setting: 9 epochs, and 30m


def test_reuse_eval_takes_an_earlier_evaluation_of_the_same_weights(script):
    run, calls, runs = script
    out, best = runs / "vae-e9", runs / "vae-e9" / "best"
    best.mkdir(parents=True)
    train = {"lr": 5e-4, "lr_decay": 0.0, "seed": 0, "epochs": 9}  # saved before test_every
    (out / "config.json").write_text(json.dumps({"train": train}))
    state = {"epoch": 9, "best_epoch": 9, "best_valid": 230.0, "seconds": 99.6, "stopped": None}
    (out / "train_state.json").write_text(json.dumps(state))
    (best / "model.safetensors").write_bytes(b"weights")

    def evaluate_again(*args, **kwargs):
        raise AssertionError("--reuse-eval evaluated again")

    run.module.evaluate_run = evaluate_again
    args = ("--only", "VAE (Gaussian prior)", "--epochs", "9", "--reuse-eval")
    with pytest.raises(SystemExit, match="has not finished training"):
        run("--only", "VAE (Gaussian prior)", "--epochs", "12", "--reuse-eval")
    with pytest.raises(SystemExit, match="eval.json is missing"):
        run(*args)
    earlier = {"k": 5000, "images": 10000, "split": "test", "neg_elbo": 229.4, "nll": 226.4,
               "nll_se": 0.76, "is_seconds": 383.9}  # fmt: skip
    (best / "eval.json").write_text(json.dumps({**earlier, "k": 1000}))
    with pytest.raises(SystemExit, match="holds k=1000 on 10000 test images, not k=5000 on"):
        run(*args)
    (best / "eval.json").write_text(json.dumps(earlier))
    os.utime(best / "eval.json", (1, 1))  # written before the weights it would stand for
    with pytest.raises(SystemExit, match="older than"):
        run(*args)
    (best / "eval.json").write_text(json.dumps(earlier))
    (row,) = run(*args)
    assert calls == []
    assert (row["test_nll"], row["test_neg_elbo"], row["eval_seconds"]) == (226.4, 229.4, None)
    assert (row["is_seconds"], row["test_every"], row["train_seconds"]) == (383.9, 1, 100)
