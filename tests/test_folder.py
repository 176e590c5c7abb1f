"""Image folders (`folder:PATH`): labels, pixel modes, bad files, the cache and the split, and a
small folder trained and served end to end. Every image is built in code and tiny."""

import base64
import io
import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import png_file
from vaelab.cli import main
from vaelab.data import FolderOptions, load_dataset, load_folder
from vaelab.data import folder as folder_module
from vaelab.errors import VaelabError
from vaelab.run import DataConfig
from vaelab.serve import Explorer, create_app


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test caches under its own tmp_path (the default place: $XDG_CACHE_HOME)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "vaelab" / "folders"


def write(root, files: dict):
    """Write {relative path: PIL image or bytes} under root; return root."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content.save(path)
    return root


def load(root, **options):
    return load_folder(f"folder:{root}", FolderOptions(**options))


def every_image(data) -> torch.Tensor:
    return torch.cat([data.train_images, data.test_images])


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = encoded(Image.fromarray(noise), "JPEG")
    return whole[: len(whole) // 2]


# ---------------------------------------------------------------- layout and labels


def test_class_folders_give_sorted_labels_and_names(tmp_path):
    files = {f"b-cats/{i}.png": Image.new("L", (5, 7), 10) for i in range(5)}
    files |= {f"a-dogs/{i}.png": Image.new("L", (7, 5), 200) for i in range(5)}
    files |= {
        "a-dogs/deeper/5.png": Image.new("L", (6, 6), 200),  # any depth below a class folder
        "a-dogs/.DS_Store": b"junk",  # names with a dot are ignored
        ".thumbnails/x.png": Image.new("L", (6, 6), 0),
        "empty-folder/.keep": b"",  # a folder with no visible file is no class
    }
    data = load(write(tmp_path / "pets", files))
    assert data.class_names == ("a-dogs", "b-cats") and data.num_classes == 2
    assert data.image_shape == (1, 28, 28)
    assert len(data.train_images) + len(data.test_images) == 11
    for images, labels in [(data.train_images, data.train_labels),
                           (data.test_images, data.test_labels)]:  # fmt: skip
        assert labels.dtype == torch.int64
        assert torch.equal(images.flatten(1).float().mean(1) > 100, labels == 0)
    assert sorted(data.test_labels.tolist()) == [0, 1]  # one held out of each class


def test_flat_folder_has_no_labels(tmp_path):
    files = {f"{i}.png": Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(5)}
    (tmp_path / "flat" / "empty-sub-folder").mkdir(parents=True)
    data = load_dataset(f"folder:{write(tmp_path / 'flat', files)}")
    assert data.train_labels is None and data.test_labels is None
    assert data.num_classes is None and data.class_names is None
    assert (len(data.train_images), len(data.test_images)) == (4, 1)
    assert data.image_shape == (3, 32, 32)
    assert str(tmp_path / "flat") in data.source and "held out" in data.split


@pytest.mark.parametrize(
    ("modes", "options", "shape"),
    [
        (["L", "L"], {}, (1, 28, 28)),
        (["L", "RGB"], {}, (3, 32, 32)),  # one colour image makes the folder RGB
        (["L", "1", "LA", "I;16"], {}, (1, 28, 28)),  # every grayscale mode
        (["L", "P"], {}, (3, 32, 32)),  # a palette counts as colour
        (["RGB", "RGB"], {"channels": 1}, (1, 28, 28)),
        (["L", "L"], {"channels": 3, "image_size": 64}, (3, 64, 64)),
        (["RGB", "L"], {"image_size": 28}, (3, 28, 28)),
    ],
)
def test_channels_and_size(tmp_path, modes, options, shape):
    files = {}
    for i, mode in enumerate(modes):
        if mode == "I;16":
            files[f"{i}.png"] = png_file(np.full((5, 5), 40000, dtype=np.uint16), 0)
        else:
            files[f"{i}.png"] = Image.new(mode, (5, 9))
    assert load(write(tmp_path / "f", files), **options).image_shape == shape


def test_mixed_sizes_keep_the_centre_square(tmp_path):
    wide = np.zeros((20, 60), dtype=np.uint8)
    wide[:, 20:40] = 255  # the centre square is white, the sides black
    files = {"wide.png": Image.fromarray(wide), "tiny.png": Image.new("L", (3, 2), 255)}
    files["tall.png"] = Image.fromarray(np.ascontiguousarray(wide.T))
    files["big.png"] = Image.new("L", (300, 200), 255)
    images = every_image(load(write(tmp_path / "f", files), image_size=8))
    assert images.shape == (4, 1, 8, 8)
    assert images.float().mean() > 230  # stretching instead would leave 2/3 of each black


def single_colour(tmp_path, content, suffix: str, **options) -> np.ndarray:
    """The one colour (C,) that two copies of `content` load as; every pixel must agree."""
    data = load(write(tmp_path / "f", {f"a{suffix}": content, f"b{suffix}": content}), **options)
    images = every_image(data).numpy()
    colour = images[0, :, 0, 0]
    assert (images == colour[None, :, None, None]).all()
    return colour


@pytest.mark.parametrize(
    ("make", "suffix", "expected"),
    [
        (lambda: Image.new("RGBA", (6, 6), (255, 0, 0, 0)), ".png", [255, 255, 255]),
        (lambda: Image.new("RGBA", (6, 6), (255, 0, 0, 255)), ".png", [255, 0, 0]),
        (lambda: Image.new("LA", (6, 6), (30, 0)), ".png", [255]),  # transparent onto white
        (lambda: Image.new("LA", (6, 6), (30, 255)), ".png", [30]),
        (lambda: encoded(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), "JPEG"), ".jpg", [0, 255, 255]),
        (lambda: encoded(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "TIFF"), ".tif", [255, 255, 255]),
        (lambda: png_file(np.full((4, 4), 32896, dtype=np.uint16), 0), ".png", [128]),  # 16-bit
        (lambda: png_file(np.full((4, 4), 65535, dtype=np.uint16), 0), ".png", [255]),
        (lambda: png_file(np.full((4, 4, 3), [0, 32896, 65535], np.uint16), 2), ".png",
         [0, 128, 255]),  # 16-bit RGB, which Pillow can read but not write
        (lambda: png_file(np.full((4, 4, 4), [65535, 0, 0, 0], np.uint16), 6), ".png",
         [255, 255, 255]),  # 16-bit RGBA, fully transparent
        (lambda: Image.new("1", (6, 6), 1), ".png", [255]),
    ],
)  # fmt: skip
def test_pixel_modes(tmp_path, make, suffix, expected):
    colour = single_colour(tmp_path, make(), suffix, image_size=4)
    np.testing.assert_allclose(colour, expected, atol=2)  # JPEG rounds a little


def test_palette_with_transparency_and_forced_channels(tmp_path):
    palette = Image.new("P", (6, 6), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.info["transparency"] = 1  # index 1 (green) is transparent
    assert list(single_colour(tmp_path / "p", palette, ".png", image_size=4)) == [255, 255, 255]
    red = Image.new("RGB", (6, 6), (255, 0, 0))
    assert list(single_colour(tmp_path / "r", red, ".png", channels=1)) == [76]  # ITU-R 601 luma
    gray = Image.new("L", (6, 6), 77)
    assert list(single_colour(tmp_path / "g", gray, ".png", channels=3)) == [77, 77, 77]


# ---------------------------------------------------------------- bad files


def folder_with_bad_files(root):
    good = {f"good{i}.png": Image.new("L", (6, 6), 100) for i in range(3)}
    bad = {
        "cut.jpg": truncated_jpeg(),
        "notes.txt": b"not an image at all\n",
        "empty.png": b"",
        "fake.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
        "half.png": encoded(Image.new("RGB", (40, 40), (1, 2, 3)), "PNG")[:60],
        "text.gif": b"GIF89a nonsense",
        "zero.bmp": b"BM" + b"\0" * 60,
    }
    return write(root, good | bad), sorted(bad)


def test_bad_files_are_an_error_that_names_the_first_five(tmp_path):
    root, bad = folder_with_bad_files(tmp_path / "f")
    with pytest.raises(VaelabError) as err:
        load(root)
    message = str(err.value)
    assert message.startswith(f"{root} holds 7 unreadable or odd file(s): ")
    assert [name in message for name in bad] == [True] * 5 + [False] * 2  # sorted, first five
    assert "and 2 more" in message and "--on-bad-file skip" in message and "\n" not in message
    assert "cut.jpg (corrupt, truncated or unsupported (image file is truncated" in message
    assert "notes.txt (not an image that Pillow can read)" in message


def test_skip_leaves_bad_files_out_with_a_warning(tmp_path):
    root, _ = folder_with_bad_files(tmp_path / "f")
    with pytest.warns(UserWarning, match=r"left out 7 unreadable or odd file\(s\): cut.jpg"):
        data = load(root, on_bad_file="skip")
    assert len(every_image(data)) == 3
    with pytest.warns(UserWarning, match="left out 7"):  # the cached load says it again
        load(root, on_bad_file="skip")


def test_a_truncated_jpeg_alone(tmp_path):
    root = write(tmp_path / "f", {"a.png": Image.new("L", (4, 4)), "b.png": Image.new("L", (4, 4)),
                                  "photo.jpg": truncated_jpeg()})  # fmt: skip
    with pytest.raises(VaelabError, match=r"1 unreadable or odd file\(s\): photo.jpg \(corrupt"):
        load(root)


def test_files_outside_the_class_folders_are_odd(tmp_path):
    files = {f"cls/{i}.png": Image.new("L", (4, 4)) for i in range(2)} | {
        "stray.png": Image.new("L", (4, 4))
    }
    with pytest.raises(VaelabError, match=r"stray.png \(outside every class folder\)"):
        load(write(tmp_path / "f", files))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "holds no files; expected images"),
        ({".hidden.png": Image.new("L", (4, 4))}, "holds no files"),
        ({"one.png": Image.new("L", (4, 4))}, "1 readable image"),
        ({"a/1.png": Image.new("L", (4, 4)), "b/1.png": Image.new("L", (4, 4))},
         "no class with two of them"),
    ],
)  # fmt: skip
def test_empty_or_too_small_folders(tmp_path, files, message):
    root = tmp_path / "f"
    root.mkdir()
    with pytest.raises(VaelabError, match=message):
        load(write(root, files))


def test_nothing_readable_under_skip(tmp_path):
    root = write(tmp_path / "f", {"a.txt": b"a", "b.txt": b"b"})
    with pytest.raises(VaelabError, match="holds no readable images"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load(root, on_bad_file="skip")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("folder:", "names no folder; expected folder:PATH"),
        ("folder:{tmp}/missing", "missing does not exist"),
        ("folder:{tmp}/file.png", "file.png is not a folder"),
    ],
)
def test_specs_that_name_no_folder(tmp_path, spec, message):
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(VaelabError, match=message):
        load_dataset(spec.format(tmp=tmp_path))


def test_the_decompression_bomb_limit_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    files = {f"ok{i}.png": Image.new("L", (9, 9)) for i in range(2)}  # 81 pixels
    files |= {"warned.png": Image.new("L", (12, 12)), "bomb.png": Image.new("L", (20, 20))}
    with pytest.raises(VaelabError) as err:
        load(write(tmp_path / "f", files))
    assert "bomb.png (over Pillow's decompression-bomb limit" in str(err.value)
    assert "warned.png (over Pillow's decompression-bomb limit" in str(err.value)  # 144 > 100
    assert Image.MAX_IMAGE_PIXELS == 100  # the loader never lifts the limit


# ---------------------------------------------------------------- cache and split


def test_second_load_reads_the_cache_and_decodes_nothing(tmp_path, cache_dir, monkeypatch):
    root = write(tmp_path / "f", {f"c{i % 2}/{i}.png": Image.new("L", (5, 5), i) for i in range(8)})
    first = load(root)
    (cached,) = cache_dir.glob("f-*.safetensors")

    def no_decoding(*args):
        raise AssertionError("a cached folder was decoded again")

    monkeypatch.setattr(folder_module, "_header_mode", no_decoding)
    monkeypatch.setattr(folder_module, "_decode", no_decoding)
    second = load(root)
    for key in ("train_images", "test_images", "train_labels", "test_labels"):
        assert torch.equal(getattr(first, key), getattr(second, key)), key
    assert second.class_names == first.class_names and second.split == first.split
    assert cached.read_bytes()[8:9] == b"{"  # safetensors: a length, then a JSON header


def test_a_changed_folder_is_scanned_again(tmp_path, cache_dir):
    root = write(tmp_path / "f", {f"{i}.png": Image.new("L", (5, 5), 10) for i in range(4)})
    assert len(every_image(load(root))) == 4
    write(root, {"new.png": Image.new("L", (5, 5), 10)})  # a file added
    assert len(every_image(load(root))) == 5
    write(root, {"0.png": Image.new("L", (5, 5), 250)})  # a file changed in place
    os.utime(root / "0.png", ns=(0, 0))  # even with an old mtime (the ctime changes)
    assert every_image(load(root)).max() == 250
    (root / "new.png").unlink()  # a file removed
    assert len(every_image(load(root))) == 4
    assert len(list(cache_dir.glob("f-*.safetensors"))) == 1  # older caches are removed
    load(root, image_size=8)  # other options: a cache of their own beside it
    assert len(list(cache_dir.glob("f-*.safetensors"))) == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"not safetensors",
        lambda b: b[: len(b) // 2],
        lambda b: b.replace(b"vaelab-folder-cache-1", b"vaelab-folder-cache-0"),
    ],
)
def test_a_damaged_cache_is_ignored_and_rewritten(tmp_path, cache_dir, damage):
    root = write(tmp_path / "f", {f"{i}.png": Image.new("L", (5, 5), i) for i in range(4)})
    first = load(root)
    (cached,) = cache_dir.glob("*.safetensors")
    cached.write_bytes(damage(cached.read_bytes()))
    with pytest.warns(UserWarning, match="Ignoring the cache .* reading .* again"):
        again = load(root)
    assert torch.equal(every_image(first), every_image(again))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten: the next load is a clean hit
        load(root)


def test_the_split_is_a_tenth_per_class_and_stable(tmp_path, cache_dir):
    # 25 + 9 images, each of its own gray level so that it can be followed.
    files = {f"a/{i:02}.png": Image.new("L", (4, 4), i) for i in range(25)}
    files |= {f"b/{i:02}.png": Image.new("L", (4, 4), 100 + i) for i in range(9)}
    root = write(tmp_path / "f", files)
    first = load(root)
    assert sorted(first.test_labels.tolist()) == [0, 0, 1]  # 25 // 10 = 2, and at least 1
    for cache in cache_dir.glob("*"):
        cache.unlink()
    assert torch.equal(load(root).test_images, first.test_images)  # no seed, same split
    write(root, {f"b/{i}.png": Image.new("L", (4, 4), 200) for i in range(9, 20)})
    changed = load(root)  # class b grew: class a's held-out images stay where they were
    assert torch.equal(changed.test_images[changed.test_labels == 0],
                       first.test_images[first.test_labels == 0])  # fmt: skip


# ---------------------------------------------------------------- options and the CLI


def test_folder_options_are_checked(tmp_path):
    with pytest.raises(VaelabError, match="apply to folder:PATH datasets only"):
        DataConfig(dataset="mnist-sample", channels=3).validate()
    for options, message in [
        ({"channels": 2}, "channels is 2: expected 1 \\(grayscale\\), 3 \\(RGB\\)"),
        ({"image_size": 2}, "image_size is 2: expected an integer from 4 to 512"),
        ({"on_bad_file": "ignore"}, "on_bad_file is 'ignore': expected one of error, skip"),
    ]:
        with pytest.raises(VaelabError, match=message):
            DataConfig(dataset="folder:x", **options).validate()
    assert DataConfig(dataset="folder:x").resolved_binarization("bernoulli") == "none"
    assert DataConfig(dataset="mnist").resolved_binarization("bernoulli") == "dynamic"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--channels", "2"], "channels is 2"),
        (["--image-size", "big"], "--image-size is 'big': expected int or null"),
        (["--on-bad-file", "maybe"], "--on-bad-file is 'maybe': expected one of error, skip"),
        (["--dataset", "mnist-sample", "--image-size", "32"], "folder:PATH datasets only"),
        ([], "1 unreadable or odd file(s): notes.txt (not an image"),
    ],
)
def test_cli_bad_folder_input_is_one_line_and_exit_2(tmp_path, capsys, flags, message):
    root = write(tmp_path / "f", {"a.png": Image.new("L", (4, 4)), "b.png": Image.new("L", (4, 4)),
                                  "notes.txt": b"hello"})  # fmt: skip
    argv = ["train", "vae", "--dataset", f"folder:{root}", *flags, "--out", str(tmp_path / "r")]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaelab: error: ") and "\n" not in err and message in err


def coloured_folder(root):
    """Two classes of noisy 10x12 RGB images: reddish and bluish."""
    rng = np.random.default_rng(0)
    files = {}
    for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        for i in range(8):
            noise = rng.integers(-30, 30, (10, 12, 3))
            files[f"{name}/{i}.png"] = Image.fromarray(np.uint8(np.clip(noise + colour, 0, 255)))
    return write(root, files)


@pytest.mark.slow
def test_a_folder_trained_and_served_end_to_end(tmp_path):
    root, run = coloured_folder(tmp_path / "photos"), tmp_path / "run"
    argv = ["train", "vae", "--dataset", f"folder:{root}", "--net", "conv", "--latent-dim", "2",
            "--batch-size", "8", "--max-steps", "3", "--out", str(run), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model_config"]["image_shape"] == [3, 32, 32]
    assert config["model_config"]["likelihood"] == "gaussian"  # a density on photos
    assert config["binarization"] == "none" and config["dataset_source"].startswith(str(root))
    assert (run / "report.html").is_file()

    explorer = Explorer.from_run(run)
    client = create_app(explorer).test_client()
    info = client.get("/api/info").json
    assert info["image_shape"] == [3, 32, 32] and info["class_names"] == ["blue", "red"]
    assert sorted(client.get("/api/points").json["labels"]) == [0, 1]
    decoded = client.post("/api/decode", json={"z": [0.5, -0.5]}).json["image"]
    picture = Image.open(io.BytesIO(base64.b64decode(decoded.split(",")[1])))
    assert picture.mode == "RGB" and picture.size == (32, 32)
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png"), "--quiet"]) == 0


def test_continuous_bernoulli_on_a_colour_folder_with_the_mlp(tmp_path):
    root, run = coloured_folder(tmp_path / "photos"), tmp_path / "run"
    argv = ["train", "cvae", "--dataset", f"folder:{root}", "--likelihood", "continuous-bernoulli",
            "--hidden", "16", "--latent-dim", "2", "--batch-size", "8", "--max-steps", "2",
            "--image-size", "28", "--out", str(run), "--no-report", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model_config"]["num_classes"] == 2
    assert config["model_config"]["image_shape"] == [3, 28, 28]
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["test/loss"]) for r in history)
