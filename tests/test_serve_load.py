"""benchmarks/serve_load.py on a tiny budget (4 clients, 2 s, at most 100 requests) against a
quickly trained run: it drives the real server and writes every field the docs' table reads."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vaelab.cli import main

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_load.py"
ENDPOINTS = {"page", "info", "points", "decode", "encode", "interpolate"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("load") / "run"
    args = ["--latent-dim", "2", "--hidden", "32", "--max-steps", "5", "--quiet", "--no-report"]
    assert main(["train", "vae", "--out", str(run), *args]) == 0
    return run


def load_test(run: Path, out: Path, server: str) -> dict:
    argv = [sys.executable, str(SCRIPT), "--run", str(run), "--clients", "4", "--seconds", "2",
            "--max-requests", "100", "--server", server, "--out", str(out)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


def test_the_load_test_writes_its_figures_and_provenance(run, tmp_path):
    result = load_test(run, tmp_path / "load.json", "waitress")
    assert {"date", "machine", "seed", "command", "settings", "servers"} <= set(result)
    assert result["machine"]["processor"] and result["seed"] == 0
    assert "--clients 4" in result["command"]
    assert result["settings"]["clients"] == 4 and result["settings"]["max_requests"] == 100
    served = result["servers"]["waitress"]
    assert 0 < served["requests"] <= 100 and served["errors"] == 0
    assert served["requests_per_s"] > 0 and served["exit_code_after_sigterm"] == 0
    assert served["rss_mb_before"] > 0 and served["rss_mb_after"] > 0
    assert set(served["endpoints"]) == ENDPOINTS
    decode = served["endpoints"]["decode"]
    assert decode["requests"] > 0 and 0 < decode["p50_ms"] <= decode["p99_ms"]


@pytest.mark.slow
def test_the_werkzeug_comparison_runs_the_same_app(run, tmp_path):
    served = load_test(run, tmp_path / "load.json", "werkzeug")["servers"]["werkzeug"]
    assert 0 < served["requests"] <= 100 and served["errors"] == 0
    assert set(served["endpoints"]) == ENDPOINTS
