"""The files a run reads back after training: eval.json and metrics.jsonl fuzzed like the other
parsers (each is read, or refused with one VaelabError naming the file, in `vaelab report`,
`vaelab serve` and `vaelab eval`), and an image folder that changed since the run trained on it
(a warning that says what changed, or a refusal under --strict-data).
"""

import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaelab.cli import main
from vaelab.errors import VaelabError
from vaelab.run import (
    EVAL_FILE,
    METRICS_FILE,
    DataChangedWarning,
    load_run,
    read_config,
    read_eval,
    read_history,
)
from vaelab.serve import Explorer
from vaelab.serve.app import eval_facts, run_facts
from vaelab.viz.figures import figure_to_png, loss_curves_figure
from vaelab.viz.report import render_report
from vaelab.viz.run_report import eval_section, summary_table

TRAIN = ["--latent-dim", "2", "--hidden", "32", "--max-steps", "5", "--quiet", "--no-report"]
GOOD_EVAL = {"split": "test", "images": 16, "k": 2, "model": "vae", "nll": 101.5, "nll_se": 0.5,
             "latent_usage_per_dim": [0.5, 0.1], "likelihood_is_density": True}  # fmt: skip
GOOD_RECORD = {"epoch": 1, "step": 5, "train/samples_per_s": 900.0, "train/lr": 0.001,
               "train/loss": 210.0, "test/loss": 205.0}  # fmt: skip
GOOD_HISTORY = (json.dumps(GOOD_RECORD) + "\n").encode()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("readback") / "run"
    assert main(["train", "vae", "--out", str(run), *TRAIN]) == 0  # 5 steps: no epoch's record
    (run / METRICS_FILE).write_bytes(GOOD_HISTORY)
    return run


@pytest.fixture(autouse=True)
def restore(request):
    """After each test of the trained run: its good metrics.jsonl back, and no eval.json."""
    yield
    if "run" in request.fixturenames:
        run = request.getfixturevalue("run")
        (run / METRICS_FILE).write_bytes(GOOD_HISTORY)
        (run / EVAL_FILE).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def loaded(run):
    config, raw = read_config(run)
    return config, raw, load_run(run)[1]


def fuzz(max_examples: int):
    return settings(max_examples=max_examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])  # fmt: skip


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_subnormal=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
HOSTILE_NUMBERS = st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 400, "1" + "0" * 5000, "-1", "0", "true"]
)


@st.composite
def mutated_json(draw, good: dict) -> bytes:
    """`good` with keys changed, added or dropped, as JSON text; or text that is not JSON."""
    kind = draw(st.sampled_from(["fields", "numbers", "cut", "nest", "utf8", "random", "other"]))
    if kind == "fields":
        record = dict(good)
        for key in draw(st.lists(st.sampled_from([*good, "extra"]), max_size=3)):
            if draw(st.booleans()):
                record[key] = draw(JSON_VALUES)
            else:
                record.pop(key, None)
        return json.dumps(record, allow_nan=True).encode()
    if kind == "numbers":  # tokens json.dumps cannot write
        key = draw(st.sampled_from(list(good)))
        text = json.dumps({k: v for k, v in good.items() if k != key})
        return f'{text[:-1]}, "{key}": {draw(HOSTILE_NUMBERS)}}}'.encode()
    if kind == "cut":
        text = json.dumps(good)
        return text[: draw(st.integers(0, len(text) - 1))].encode()
    if kind == "nest":
        return b"[" * draw(st.integers(1, 100_000))
    if kind == "utf8":
        return json.dumps(good).encode()[:-2] + draw(st.binary(min_size=1, max_size=8)) + b"\xff}"
    if kind == "random":
        return draw(st.binary(max_size=100))
    return json.dumps(draw(JSON_VALUES), allow_nan=True).encode()


def assert_refused_naming(err: VaelabError, path) -> None:
    message = str(err)
    assert str(path) in message and "\n" not in message and len(message) < 600


@fuzz(400)
@given(content=mutated_json(GOOD_EVAL))
def test_fuzz_eval_json(run, content):
    path = run / EVAL_FILE
    path.write_bytes(content)
    try:
        result = read_eval(run)
    except VaelabError as err:
        assert_refused_naming(err, path)
        return
    eval_facts(result)  # what `vaelab serve` shows
    render_report("r", [eval_section(run)])  # what `vaelab report` writes


NUMERIC_KEYS = ["train/loss", "test/loss", "train/lr", "valid/loss", "train/kl"]


@st.composite
def history_lines(draw) -> bytes:
    """Lines of records: good ones, numeric ones (any float), mutated ones, blank ones."""
    lines = []
    for epoch in range(1, draw(st.integers(1, 4)) + 1):
        kind = draw(st.sampled_from(["good", "numbers", "mutated", "blank"]))
        record = {**GOOD_RECORD, "epoch": epoch, "step": 5 * epoch}
        if kind == "numbers":
            floats = st.floats(allow_subnormal=False) | st.integers(-(10**20), 10**20)
            keys = st.lists(st.sampled_from(NUMERIC_KEYS), max_size=3)
            record.update({key: draw(floats) for key in draw(keys)})
        line = draw(mutated_json(record)) if kind == "mutated" else json.dumps(record).encode()
        lines.append(b"" if kind == "blank" else line)
    return b"\n".join(lines) + draw(st.sampled_from([b"\n", b"", b"\n\n"]))


@fuzz(250)
@given(content=history_lines())
def test_fuzz_metrics_jsonl(run, loaded, content):
    (run / EVAL_FILE).unlink(missing_ok=True)  # only the history varies
    path = run / METRICS_FILE
    path.write_bytes(content)
    try:
        history = read_history(run)
    except VaelabError as err:
        assert_refused_naming(err, path)
        return
    config, raw, model = loaded
    summary_table(config, raw, history, model)  # `vaelab report`'s summary
    run_facts(run, config, model, "dynamic")  # `vaelab serve`'s facts
    odd = [v for r in history for v in r.values() if not abs(v) < 1e300]  # NaN, inf, 1e308
    if odd and any(k.endswith("/loss") for r in history for k in r):  # what may break a plot
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # matplotlib on NaN or infinite points
            try:
                figure_to_png(loss_curves_figure(history))
            except VaelabError as err:  # "no numeric value for key ...": said, not crashed
                assert "history" in str(err)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaelab: error: ") and "\n" not in err and "Traceback" not in err
    return err


BAD_FILES = [
    (EVAL_FILE, b'{"split": "test", "k": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    (EVAL_FILE, b"[1, 2]", "holds list"),
    (EVAL_FILE, b'{"split": 3, "k": 5}', "expected a split name"),
    (EVAL_FILE, b'{"split": "test", "k": 5, "nll": 1e999999, "x": {"a": 1}}', "'x' is"),
    (METRICS_FILE, b'{"epoch": 1, "step": 5, "train/samples_per_s": NaN}\n', "samples_per_s"),
    (METRICS_FILE, b'{"epoch": 1, "step": 5, "train/samples_per_s": 1}\n{"epoch"', "line 2"),
    (METRICS_FILE, b'{"epoch": "1", "step": 5, "train/samples_per_s": 1}\n', "epoch is '1'"),
    (METRICS_FILE, b"\xff\xfe{}\n", "not UTF-8"),
]


@pytest.mark.parametrize("name, content, message", BAD_FILES)
def test_report_and_serve_refuse_a_bad_file_in_one_line(run, capsys, name, content, message):
    (run / EVAL_FILE).write_text(json.dumps(GOOD_EVAL))
    (run / name).write_bytes(content)
    for argv in (["report", str(run)], ["serve", str(run), "--port", "0"]):
        assert main([*argv, "--quiet"]) == 2
        err = one_error_line(capsys)
        assert str(run / name) in err and message in err, err


@pytest.mark.slow
def test_eval_refuses_a_bad_history_when_it_writes_the_report(run, capsys):
    (run / METRICS_FILE).write_bytes(b'{"epoch": 1, "step": -5, "train/samples_per_s": 1}\n')
    assert main(["eval", str(run), "--k", "2", "--limit", "16", "--quiet"]) == 2
    err = one_error_line(capsys)
    assert str(run / METRICS_FILE) in err and "step is -5" in err


# ---- an image folder that changed since the run trained on it


@pytest.fixture
def folder_run(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the folder cache
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    run = tmp_path / "run"
    argv = ["train", "vae", "--dataset", f"folder:{root}", "--image-size", "8", "--batch-size",
            "8", "--out", str(run), *TRAIN]  # fmt: skip
    assert main(argv) == 0
    return root, run


def test_training_records_the_folders_content(folder_run):
    root, run = folder_run
    content = json.loads((run / "config.json").read_text())["folder_content"]
    assert len(content["files"]) == 20 and content["files"][0][0] == "a/0.png"
    assert isinstance(content["key"], str) and len(content["key"]) == 64


def change_folder(root) -> None:
    Image.new("L", (8, 8), 7).save(root / "b" / "new.png")  # added
    (root / "a" / "3.png").unlink()  # removed
    Image.new("L", (16, 16), 200).save(root / "b" / "4.png")  # changed (another size)


def test_a_changed_folder_is_a_warning_that_says_what_changed(folder_run, capsys):
    root, run = folder_run
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unchanged: no warning at all
        Explorer.from_run(run)
    change_folder(root)
    with pytest.warns(DataChangedWarning) as caught:
        assert main(["report", str(run), "--quiet"]) == 0
    text = str(caught[0].message)
    assert f"folder:{root} is not the folder {run} trained on" in text
    assert "20 files then, 20 now" in text and "1 added (b/new.png)" in text
    assert "1 removed (a/3.png)" in text and "1 changed (b/4.png)" in text


def test_strict_data_refuses_a_changed_folder(folder_run, capsys):
    root, run = folder_run
    change_folder(root)
    for argv in (["eval", str(run), "--k", "2"], ["report", str(run)],
                 ["serve", str(run), "--port", "0"]):  # fmt: skip
        assert main([*argv, "--strict-data", "--quiet"]) == 2
        err = one_error_line(capsys)
        assert (
            "is not the folder" in err and "1 added (b/new.png)" in err and "--strict-data" in err
        )
    with pytest.raises(VaelabError, match="1 removed"):
        Explorer.from_run(run, strict_data=True)


def test_a_touched_folder_says_only_its_times_changed(folder_run):
    root, run = folder_run
    for path in sorted(root.rglob("*.png"))[:2]:
        path.chmod(0o600)  # the status-change time moves, the content does not
    with pytest.warns(DataChangedWarning, match="the same files, sizes and modification times"):
        Explorer.from_run(run)


LYING_CONTENT = [[], {"key": 3, "files": []}, {"key": "k", "files": [["a", 1]]},
                 {"key": "k", "files": [["a", "1", 2]]}, {"key": "k"}]  # fmt: skip


@pytest.mark.parametrize("content", LYING_CONTENT)
def test_a_folder_content_record_that_lies_is_refused(folder_run, content):
    _, run = folder_run
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "folder_content": content}))
    with pytest.raises(VaelabError, match="'folder_content' is not a content key"):
        read_config(run)
