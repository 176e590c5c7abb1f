"""Hostile input: pickles posing as safetensors, safetensors and JSON files that lie about the
model, hostile image folders, and fuzzed IDX and image files. Every refusal is a VaelabError
(on the command line: one sentence, exit code 2) and nothing in a hostile file runs.

The fuzzers run a fixed number of examples each (FUZZ_EXAMPLES, quoted in the README)."""

import gzip
import io
import json
import os
import pickle
import shutil
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import assert_idx_reads_or_refuses, png_chunk, png_file, tiny_config
from vaelab.cli import main
from vaelab.data import FolderOptions, load_dataset, load_folder, write_idx
from vaelab.errors import VaelabError
from vaelab.run import DataConfig, RunConfig, TrainConfig, load_run
from vaelab.serve import Explorer
from vaelab.training import checkpoint
from vaelab.training.trainer import resume, train

FUZZ_EXAMPLES = {  # examples per fuzzer: each runs in 2-5 s on a busy 2-core CPU
    "idx_mutated_files": 500,
    "idx_pairs_through_the_catalog": 300,
    "folder_random_bytes": 300,
    "folder_mutated_images": 300,
    "folder_png_headers": 300,
}


def fuzz(name: str):
    return settings(
        max_examples=FUZZ_EXAMPLES[name],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


class Payload:
    """Unpickling this creates the file at `path`: what a malicious checkpoint would do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def pickled(path, how: str) -> bytes:
    """A malicious payload that creates `path` when loaded, as pickle or as torch.save's zip."""
    if how == "pickle":
        return pickle.dumps({"encoder.net.0.weight": Payload(path)})
    buffer = io.BytesIO()
    torch.save({"encoder.net.0.weight": Payload(path)}, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_data):
    run = tmp_path_factory.mktemp("hostile") / "run"
    config = RunConfig(
        model="vae",
        model_config=tiny_config("vae"),
        data=DataConfig(dataset="mnist-sample"),
        train=TrainConfig(epochs=1, batch_size=128),
    )
    train(config, run, quiet=True, data=small_data)
    return run


@pytest.fixture
def run(trained, tmp_path):
    """A fresh copy of a trained run, to damage."""
    return shutil.copytree(trained, tmp_path / "run")


def vouch(run, name: str) -> None:
    """Rewrite the manifest so that it vouches for `name` as it is now: an attacker who
    controls the whole folder; the file itself must then be refused on its own merits."""
    manifest = json.loads((run / checkpoint.MANIFEST).read_text())
    manifest["sha256"][name] = checkpoint.sha256_file(run / name)
    (run / checkpoint.MANIFEST).write_text(json.dumps(manifest))


def refused(argv: list[str], capsys) -> str:
    """The CLI's refusal: exit code 2 and one line on stderr, no traceback."""
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaelab: error: ") and "\n" not in err and "Traceback" not in err
    return err


def sample_argv(run) -> list[str]:
    return ["sample", str(run), "--n", "2", "--out", str(run.parent / "s.png")]


# ---------------------------------------------------------------- pickles


def test_the_payload_is_live(tmp_path):
    """The control: unpickling the payload does create its file (so its absence means
    something in the tests below)."""
    for how in ("pickle", "torch-zip"):
        target = tmp_path / f"control-{how}"
        data = pickled(target, how)
        if how == "pickle":
            pickle.loads(data)
        else:
            torch.load(io.BytesIO(data), weights_only=False)
        assert target.exists()


@pytest.mark.parametrize("how", ["pickle", "torch-zip"])
@pytest.mark.parametrize("vouched", [False, True])
def test_a_pickled_model_file_runs_nothing(run, tmp_path, capsys, how, vouched):
    sentinel = tmp_path / "pwned"
    (run / checkpoint.MODEL_FILE).write_bytes(pickled(sentinel, how))
    if vouched:
        vouch(run, checkpoint.MODEL_FILE)
    message = refused(sample_argv(run), capsys)
    if vouched:  # parsed as safetensors only, and refused as such
        assert "not a valid safetensors file" in message and "never loads pickles" in message
    else:
        assert "does not match its manifest" in message
    for argv in (["eval", str(run), "--k", "1"], ["report", str(run)]):
        refused(argv, capsys)
    with pytest.raises(VaelabError):
        Explorer.from_run(run)  # what `vaelab serve` loads
    assert not sentinel.exists()


@pytest.mark.parametrize("how", ["pickle", "torch-zip"])
def test_a_pickled_train_state_runs_nothing(run, tmp_path, capsys, small_data, how):
    sentinel = tmp_path / "pwned"
    (run / checkpoint.STATE_FILE).write_bytes(pickled(sentinel, how))
    vouch(run, checkpoint.STATE_FILE)
    with pytest.raises(VaelabError, match="not a valid safetensors file"):
        resume(run, epochs=2, quiet=True, data=small_data)
    assert "not a valid safetensors" in refused(["train", "vae", "--resume", str(run)], capsys)
    assert not sentinel.exists()


def test_a_pickle_in_the_folder_cache_runs_nothing(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("L", (4, 4), i).save(images / f"{i}.png")
    cache = tmp_path / "cache"
    first = load_folder(f"folder:{images}", cache_dir=cache)
    (cached,) = cache.glob("*.safetensors")
    sentinel = tmp_path / "pwned"
    cached.write_bytes(pickled(sentinel, "pickle"))
    with pytest.warns(UserWarning, match="Ignoring the cache"):
        again = load_folder(f"folder:{images}", cache_dir=cache)
    assert torch.equal(again.train_images, first.train_images)
    assert not sentinel.exists()


# ---------------------------------------------------------------- safetensors that lie


def rewrite_weights(run, change) -> None:
    tensors = load_file(run / checkpoint.MODEL_FILE)
    change(tensors)
    save_file(tensors, run / checkpoint.MODEL_FILE)
    vouch(run, checkpoint.MODEL_FILE)


def first_key(tensors, suffix=".weight"):
    return sorted(k for k in tensors if k.endswith(suffix))[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop(first_key(t)), "does not fit the model: missing ['decoder.net.0.weight']"),
        (lambda t: t.update(extra=torch.zeros(1)), "unexpected ['extra']"),
        (lambda t: t.update({"renamed": t.pop(first_key(t))}), "unexpected ['renamed']"),
        (lambda t: t.update({first_key(t): t[first_key(t)].T.contiguous()}),
         "decoder.net.0.weight has shape (2, 32), the model expects (32, 2)"),
        (lambda t: t.update({first_key(t): t[first_key(t)].double()}),
         "is torch.float64 (32, 2), the model expects torch.float32 (32, 2)"),
        (lambda t: t.update({first_key(t): t[first_key(t)].half()}), "torch.float16"),
        (lambda t: t.update({first_key(t): t[first_key(t)].to(torch.int32)}), "torch.int32"),
        (lambda t: t[first_key(t)].view(-1).__setitem__(0, float("nan")), "NaN or infinite"),
        (lambda t: t[first_key(t)].view(-1).__setitem__(0, float("inf")), "NaN or infinite"),
    ],
)  # fmt: skip
def test_weights_with_wrong_keys_shapes_dtypes_or_values(run, capsys, change, message):
    rewrite_weights(run, change)
    with pytest.raises(VaelabError) as err:
        load_run(run)
    assert message in str(err.value)
    assert message in refused(sample_argv(run), capsys)


def safetensors_header(header, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def one_tensor(dtype="F32", shape=(1,), offsets=(0, 4), data=b"1234") -> bytes:
    header = {"w": {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}}
    return safetensors_header(header, data)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff" * 8,  # a header of 2**64 - 1 bytes
        struct.pack("<Q", 10) + b"{not json}",
        one_tensor(shape=(1000, 1000)),  # a shape that the data does not hold
        one_tensor(offsets=(0, 4000)),  # offsets past the end of the file
        one_tensor(dtype="OBJECT"),
        one_tensor(shape=(-1,)),
        safetensors_header({"__metadata__": {"a": 1}}),
        safetensors_header([1, 2, 3]),
    ],
)  # fmt: skip
def test_malformed_safetensors_files(run, capsys, content):
    (run / checkpoint.MODEL_FILE).write_bytes(content)
    vouch(run, checkpoint.MODEL_FILE)
    assert "not a valid safetensors file" in refused(sample_argv(run), capsys)


def rewrite_state(run, tensors_change=None, json_change=None) -> None:
    if tensors_change:
        tensors = load_file(run / checkpoint.STATE_FILE)
        tensors_change(tensors)
        save_file(tensors, run / checkpoint.STATE_FILE)
        vouch(run, checkpoint.STATE_FILE)
    if json_change:
        state = json.loads((run / checkpoint.STATE_JSON).read_text())
        json_change(state)
        (run / checkpoint.STATE_JSON).write_text(json.dumps(state))
        vouch(run, checkpoint.STATE_JSON)


def moment(tensors, field="exp_avg"):
    return sorted(k for k in tensors if k.endswith(f".{field}"))[0]


def groups(state):
    return state["optimizers"]["model"]["param_groups"]


@pytest.mark.parametrize(
    ("tensors_change", "json_change", "message"),
    [
        (lambda t: t.update({"rng.torch": t["rng.torch"].float()}), None,
         "rng.torch is torch.float32 (5056,), expected a uint8 vector"),
        (lambda t: t.pop("rng.binarize"), None, "has no rng.binarize: no random state"),
        (lambda t: t.update({"rng.torch": t["rng.torch"][:100].clone()}), None,
         "rng.torch has 100 bytes, expected 5056"),
        (lambda t: t.update({moment(t): t[moment(t)][:1].clone()}), None,
         "does not fit this model: its exp_avg is torch.float32 (1, 784), expected"),
        (lambda t: t[moment(t)].view(-1).__setitem__(0, float("nan")), None, "NaN or infinite"),
        (lambda t: t.pop(moment(t, "exp_avg_sq")), None, "a parameter's state has ['exp_avg'"),
        (lambda t: t.update({moment(t, "step"): torch.zeros(3)}), None, "its step is"),
        (None, lambda s: s.update(epoch="1"), "field 'epoch' is '1': expected an integer >= 0"),
        (None, lambda s: s.update(step=-5), "field 'step' is -5"),
        (None, lambda s: s.update(step_in_epoch=True), "field 'step_in_epoch' is True"),
        (None, lambda s: s.update(seconds=None), "field 'seconds' is None: expected a number"),
        (None, lambda s: s.update(seconds=-1.0), "field 'seconds' is -1.0"),
        (None, lambda s: s.update(seconds=float("nan")), "field 'seconds' is nan"),
        (None, lambda s: s.update(epoch_lr_factor="x"), "field 'epoch_lr_factor' is 'x'"),
        (None, lambda s: s.update(history={"epoch": 1}), "'history' is not a list"),
        (None, lambda s: s.update(optimizers=[]), "'optimizers' is not a table"),
        (None, lambda s: s.update(optimizers={}), "has no optimizer state for 'model'"),
        (None, lambda s: s["optimizers"]["model"]["extra"].update(nodot=1), "does not fit"),
        (None, lambda s: groups(s)[0].update(eps="tiny"), "its settings"),
        (None, lambda s: groups(s)[0].update(params=[0, 0, 0]), "its settings"),
        (None, lambda s: groups(s).append(dict(groups(s)[0])), "param groups, expected 1"),
        (None, lambda s: s["optimizers"]["model"].update(param_groups="all"), "not a list"),
        (None, lambda s: s.clear() or s.update(x=1), "field 'epoch' is None"),
    ],
)  # fmt: skip
def test_a_train_state_that_lies_is_refused_before_training(
    run, small_data, tensors_change, json_change, message
):
    rewrite_state(run, tensors_change, json_change)
    before = load_file(run / checkpoint.MODEL_FILE)
    with pytest.raises(VaelabError) as err:
        resume(run, epochs=2, quiet=True, data=small_data)
    assert message in str(err.value)
    after = load_file(run / checkpoint.MODEL_FILE)
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing was trained or saved


@pytest.mark.parametrize(
    "manifest",
    [[1, 2], {"format": "vaelab-checkpoint-1"}, {"format": "vaelab-checkpoint-1", "sha256": []},
     {"format": "other", "sha256": {}}, "text"],
)  # fmt: skip
def test_a_malformed_manifest_is_refused(run, capsys, manifest):
    (run / checkpoint.MANIFEST).write_text(json.dumps(manifest))
    assert "is not a vaelab checkpoint manifest" in refused(sample_argv(run), capsys)


# ---------------------------------------------------------------- config.json that lies


def edit_config(run, change) -> None:
    config = json.loads((run / "config.json").read_text())
    change(config)
    (run / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["data"].update(cache="x"), "data has unknown field(s) cache"),
        (lambda c: c["train"].update(dropout=0.1), "train has unknown field(s) dropout"),
        (lambda c: c["model_config"].update(hidden="32"), "'hidden' is '32': expected a list"),
        (lambda c: c["model_config"].update(image_shape=[1, 28, "28"]), "'image_shape'"),
        (lambda c: c["model_config"].update(latent_dim=2.0), "'latent_dim' is 2.0"),
        (lambda c: c["model_config"].update(latent_dim=None), "'latent_dim' is None"),
        (lambda c: c["model_config"].update(latent_dim={"a": 1}), "'latent_dim' is {'a': 1}"),
        (lambda c: c["train"].update(epochs=1.5), "'epochs' is 1.5: expected int"),
        (lambda c: c["train"].update(lr=-1), "lr is -1.0: expected a positive number"),
        (lambda c: c["data"].update(dataset=5), "'dataset' is 5: expected str"),
        (lambda c: c["data"].update(channels=2), "channels is 2"),
        (lambda c: c.update(data=None), "data must be a table of fields, got NoneType"),
        (lambda c: c.update(model_config=[]), "model_config must be a table"),
        (lambda c: c.update(model="resnet"), "unknown model 'resnet'"),
        (lambda c: c.pop("model"), "does not name a model"),
        (lambda c: c.update(binarization=["dynamic"]), "'binarization' is ['dynamic']"),
        (lambda c: c.update(binarization="soft"), "'binarization' is 'soft'"),
        (lambda c: c.update(split=7), "'split' is 7: expected str"),
        # The right types but absurd sizes: refused from the weights' header, nothing allocated
        # (building this MLP for real would ask for 8 TB).
        (lambda c: c["model_config"].update(latent_dim=10**12), "the model expects (2000000000000"),
        (lambda c: c["model_config"].update(hidden=[10**6, 10**6]), "does not fit the model"),
    ],
)  # fmt: skip
def test_a_config_that_lies_is_one_clear_error(run, capsys, change, message):
    edit_config(run, change)
    assert message in refused(sample_argv(run), capsys)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is not valid JSON"),
        (b'{"model": "vae",', "is not valid JSON"),
        (b"\xff\xfe{}", "is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "is not valid JSON: maximum recursion depth"),
        (b'{"model": "vae", "x": ' + b"9" * 5000 + b"}", "is not valid JSON: Exceeds the limit"),
        (b'[{"model": "vae"}]', "does not name a model"),
        (b'"vae"', "does not name a model"),
        (b'{"model": "vae", "train": {"lr": NaN}}', "lr is nan: expected a positive number"),
    ],
)
def test_a_config_that_is_not_json_or_not_a_table(run, capsys, content, message):
    (run / "config.json").write_bytes(content)
    assert message in refused(sample_argv(run), capsys)


# ---------------------------------------------------------------- hostile image folders


def folder_of(tmp_path, hostile: dict[str, bytes]):
    root = tmp_path / "images"
    root.mkdir(exist_ok=True)
    for i in range(2):
        Image.new("L", (4, 4), 50 * i).save(root / f"good{i}.png")
    for name, content in hostile.items():
        (root / name).write_bytes(content)
    return root


def png_claiming(width: int, height: int) -> bytes:
    """A 60-byte PNG whose header claims width x height 8-bit gray pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))  # fmt: skip


def test_decompression_bombs_are_refused_at_the_default_limit(tmp_path):
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's default, which vaelab keeps
    bomb = png_claiming(30_000, 30_000)  # 900 Mpx: over twice the limit, Pillow's error
    big = png_claiming(10_000, 10_000)  # 100 Mpx: over the limit, Pillow's warning
    root = folder_of(tmp_path, {"bomb.png": bomb, "big.png": big})
    with pytest.raises(VaelabError) as err:
        load_folder(f"folder:{root}", cache_dir=tmp_path / "cache")
    for name in ("bomb.png", "big.png"):
        assert f"{name} (over Pillow's decompression-bomb limit" in str(err.value)


def test_special_files_and_links_are_odd_not_fatal(tmp_path):
    root = folder_of(tmp_path, {})
    os.mkfifo(root / "pipe.png")  # opening it would block forever
    os.symlink("/dev/zero", root / "zero.png")  # reading it would never end
    os.symlink(root / "loop-b.png", root / "loop-a.png")
    os.symlink(root / "loop-a.png", root / "loop-b.png")
    os.symlink(root / "gone.png", root / "dangling.png")
    (root / os.fsdecode(b"bad-name-\xff.png")).write_bytes(b"junk")  # not valid UTF-8
    with pytest.raises(VaelabError) as err:
        load_folder(f"folder:{root}", cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "holds 6 unreadable or odd file(s)" in message and "and 1 more" in message
    assert "pipe.png (not a regular file)" in message and "loop-a.png (could not be read" in message
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_folder(f"folder:{root}", FolderOptions(on_bad_file="skip"), tmp_path / "c")
    assert len(data.train_images) + len(data.test_images) == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda t: t.update(train_images=t["train_images"].float()),
        lambda t: t.update(train_images=t["train_images"][:, :, :2].contiguous()),
        lambda t: t.update(test_labels=t["test_labels"] + 100),
        lambda t: t.update(extra=torch.zeros(1)),
        lambda t: t.pop("train_labels"),
    ],
)
def test_a_folder_cache_that_lies_is_ignored(tmp_path, damage):
    root = tmp_path / "images"
    for i in range(6):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4), i).save(root / f"c{i % 2}" / f"{i}.png")
    first = load_folder(f"folder:{root}", cache_dir=tmp_path / "cache")
    (cached,) = (tmp_path / "cache").glob("*.safetensors")
    with safe_open(cached, "pt") as f:
        meta = f.metadata()
    tensors = load_file(cached)
    damage(tensors)
    save_file(tensors, cached, metadata=meta)
    with pytest.warns(UserWarning, match="Ignoring the cache"):
        again = load_folder(f"folder:{root}", cache_dir=tmp_path / "cache")
    assert torch.equal(again.train_labels, first.train_labels)


# ---------------------------------------------------------------- fuzzers: IDX


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None, extra: bytes) -> bytes:
    """Overwrite bytes (position modulo the length), cut the end off, append bytes."""
    out = bytearray(data)
    for position, value in edits:
        if out:
            out[position % len(out)] = value
    if cut is not None:
        del out[cut % (len(out) + 1) :]
    return bytes(out) + extra


EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6)
CUT = st.none() | st.integers(0, 10_000)
EXTRA = st.binary(max_size=16)


IDX_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def valid_idx(dtype: str, shape: tuple[int, ...], compress: bool) -> bytes:
    """An IDX file's bytes, built in memory (test_idx.py checks write_idx writes the same)."""
    array = np.arange(int(np.prod(shape))).astype(">" + dtype)
    data = struct.pack(f">HBB{len(shape)}I", 0, IDX_CODES[dtype], len(shape), *shape)
    data += array.tobytes()
    return gzip.compress(data, mtime=0) if compress else data


IDX_FILES = st.builds(
    valid_idx,
    st.sampled_from(["u1", "i1", "i2", "i4", "f4", "f8"]),
    st.lists(st.integers(0, 5), min_size=1, max_size=4).map(tuple),
    st.booleans(),
)


@fuzz("idx_mutated_files")
@given(original=IDX_FILES, edits=EDITS, cut=CUT, extra=EXTRA, recompress=st.booleans())
def test_fuzz_idx_reader_on_mutated_valid_files(tmp_path, original, edits, cut, extra, recompress):
    """Valid IDX files (plain or gzip), mutated: inside the gzip stream too (recompress)."""
    data = mutate(original, edits, cut, extra)
    if recompress and original[:2] == b"\x1f\x8b":
        data = gzip.compress(mutate(gzip.decompress(original), edits, cut, extra), mtime=0)
    path = tmp_path / "fuzz-idx"
    path.write_bytes(data)
    assert_idx_reads_or_refuses(path)


@fuzz("idx_pairs_through_the_catalog")
@given(
    n=st.integers(0, 12),
    images_edits=EDITS,
    labels_edits=EDITS,
    cut=CUT,
    labels_dtype=st.sampled_from(["u1", "i4", "f4"]),
)
def test_fuzz_idx_pairs_through_load_dataset(tmp_path, n, images_edits, labels_edits, cut,
                                              labels_dtype):  # fmt: skip
    """`idx:PATH` with a mutated images file and labels file: the parser, the pair checks and
    the split, as a user's files reach them."""
    folder = tmp_path / "pair"
    folder.mkdir(exist_ok=True)
    images, labels = folder / "x-images-idx3-ubyte", folder / "x-labels-idx1-ubyte"
    write_idx(images, np.arange(n * 16, dtype=np.uint8).reshape(n, 4, 4))
    write_idx(labels, (np.arange(n) % 3).astype(labels_dtype))
    images.write_bytes(mutate(images.read_bytes(), images_edits, cut, b""))
    labels.write_bytes(mutate(labels.read_bytes(), labels_edits, None, b""))
    try:
        data = load_dataset(f"idx:{images}")
    except VaelabError:
        return
    assert data.train_images.dtype == torch.uint8 and data.train_images.ndim == 4
    assert len(data.train_images) == len(data.train_labels)


# ---------------------------------------------------------------- fuzzers: image folders


def load_fuzzed_folder(name: str, content: bytes) -> int | None:
    """Two good images and one fuzzed file: under `error` the folder loads or the error names
    the file; under `skip` it always loads. Anything else (a crash, a hang) fails the test.
    Returns how many images the `error` policy loaded (None: it refused the file)."""
    loaded = {}
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = folder_of(Path(folder), {name: content})
        for policy in ("error", "skip"):
            options = FolderOptions(on_bad_file=policy)
            try:
                data = load_folder(f"folder:{root}", options, Path(folder) / policy)
            except VaelabError as err:
                assert policy == "error" and name in str(err), err
                continue
            loaded[policy] = len(data.train_images) + len(data.test_images)
            assert data.train_images.dtype == torch.uint8
            assert data.image_shape in ((1, 28, 28), (3, 32, 32))
    assert loaded["skip"] in (2, 3)
    return loaded.get("error")


SUFFIXES = st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".tif", ".webp", ".ico", ".txt", ""])


@fuzz("folder_random_bytes")
@given(content=st.binary(max_size=512), suffix=SUFFIXES)
def test_fuzz_folder_loader_on_random_bytes(content, suffix):
    load_fuzzed_folder(f"fuzz{suffix}", content)


def valid_image(fmt: str, mode: str, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(size[0] * 31 + size[1])
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


FORMATS = {  # format -> modes it can save
    "PNG": ["L", "RGB", "RGBA", "P", "1", "LA"],
    "JPEG": ["L", "RGB", "CMYK"],
    "GIF": ["P", "L"],
    "BMP": ["RGB", "L", "P"],
    "TIFF": ["RGB", "L", "CMYK", "RGBA"],
    "WEBP": ["RGB", "RGBA"],
    "ICO": ["RGBA"],
}
VALID_IMAGES = st.sampled_from(sorted(FORMATS)).flatmap(
    lambda fmt: st.builds(
        valid_image,
        st.just(fmt),
        st.sampled_from(FORMATS[fmt]),
        st.tuples(st.integers(1, 24), st.integers(1, 24)),
    )
)


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute every chunk's CRC, so that a mutation reaches the decoder behind the checks."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return data
    out, position = bytearray(data[:8]), 8
    while position + 12 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        body = data[position + 4 : position + 8 + length]
        if len(body) < 4 + length:
            break
        out += data[position : position + 4] + body + struct.pack(">I", zlib.crc32(body))
        position += 12 + length
    return bytes(out + data[position:])


@fuzz("folder_mutated_images")
@given(original=VALID_IMAGES, edits=EDITS, cut=CUT, extra=EXTRA, fix_crcs=st.booleans())
def test_fuzz_folder_loader_on_mutated_images(original, edits, cut, extra, fix_crcs):
    """Valid PNG, JPEG, GIF, BMP, TIFF, WebP and ICO files with bytes overwritten, cut or added;
    for PNG, optionally with their CRCs repaired so the damage reaches the decoder."""
    data = mutate(original, edits, cut, extra)
    load_fuzzed_folder("mutated.img", fix_png_crcs(data) if fix_crcs else data)


# (bit depth, colour type): every pair the PNG standard allows, and some it does not
PNG_KINDS = [(1, 0), (2, 0), (4, 0), (8, 0), (16, 0), (8, 2), (16, 2), (1, 3), (2, 3),
             (4, 3), (8, 3), (8, 4), (16, 4), (8, 6), (16, 6),
             (3, 0), (8, 1), (0, 0), (16, 3), (8, 7)]  # fmt: skip
SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # per pixel, by colour type
SIDES = st.integers(1, 40) | st.sampled_from([0, 65_535, 2**31 - 1, 2**32 - 1])


@fuzz("folder_png_headers")
@given(
    width=SIDES,
    height=SIDES,
    kind=st.sampled_from(PNG_KINDS),
    interlace=st.sampled_from([0, 1, 2]),
    payload=st.binary(min_size=1, max_size=600),
    fit=st.booleans(),
    compress=st.booleans(),
    palette=st.booleans(),
)
def test_fuzz_folder_loader_on_png_headers(width, height, kind, interlace, payload, fit, compress,
                                           palette):  # fmt: skip
    """PNGs with valid CRCs whose header fields (size, bit depth, colour type, interlace) are
    any value, over any payload (`fit`: repeated to the length that the header asks for, so
    that many decode): the decoder's own checks, not the CRC, must catch what is wrong."""
    depth, colour = kind
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    row = 1 + -(-width * depth * SAMPLES.get(colour, 1) // 8)  # a filter byte, then samples
    if fit and interlace == 0 and row * height <= 1 << 16:
        payload = (payload * (row * height // len(payload) + 1))[: row * height]
        payload = bytes(b % 5 if i % row == 0 else b for i, b in enumerate(payload))  # filters
    chunks = png_chunk(b"IHDR", header)
    if palette:
        chunks += png_chunk(b"PLTE", bytes(range(48)))
    chunks += png_chunk(b"IDAT", zlib.compress(payload) if compress else payload)
    load_fuzzed_folder("header.png", b"\x89PNG\r\n\x1a\n" + chunks + png_chunk(b"IEND", b""))


def test_the_fuzz_harness_tells_good_files_from_bad():
    assert load_fuzzed_folder("fine.png", png_file(np.full((4, 4), 1000, np.uint16), 0)) == 3
    assert load_fuzzed_folder("junk.png", b"not an image") is None
