"""benchmarks/contention.py end to end at a tiny budget: every setting runs and the shares are
each process's speed over its solo speed."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import contention  # noqa: E402


@pytest.mark.slow
def test_contention_benchmark_records_every_share(tmp_path):
    out = tmp_path / "contention.json"
    argv = ["--dataset", "mnist-sample", "--limit", "512", "--seconds", "1", "--rounds", "1",
            "--out", str(out)]  # fmt: skip
    assert contention.main(argv) == 0
    result = json.loads(out.read_text())
    (round_,) = result["rounds"]
    solo = result["vaelab_alone_images_per_s"]
    assert solo == round_["alone"][0] > 0
    assert result["two_vaelab"]["shares"] == [[s / solo for s in round_["two"]]]
    beside = result["vaelab_beside_plain"]["shares"][0]
    assert beside[1] == round_["beside"][1] / result["plain_alone_images_per_s"]
    assert result["machine"] and result["date"] and result["command"].endswith(str(out))
