"""Named datasets: loading, look-up order, verification and downloads (from 127.0.0.1 only)."""

import dataclasses
import gzip
import hashlib
import shutil
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.data import catalog
from vaelab.data.catalog import (
    STEMS,
    Checksum,
    dataset_names,
    describe_datasets,
    download_file,
    load_dataset,
)
from vaelab.data.idx import content_md5, write_idx
from vaelab.errors import VaelabError

FASHION = Path("/work/shared/data/fashion-mnist")
DEAD_MIRROR = "http://127.0.0.1:9/"  # the discard port: nothing listens, so nothing is fetched
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real home, cache, system folder, proxy or mirror: every look-up stays in tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    monkeypatch.setattr(catalog, "SYSTEM_DIRS", (tmp_path / "system",))
    for name, entry in catalog.CATALOG.items():
        monkeypatch.setitem(
            catalog.CATALOG, name, dataclasses.replace(entry, mirrors=(DEAD_MIRROR,))
        )


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_files(folder: Path, n_train: int = 20, n_test: int = 10) -> dict[str, Checksum]:
    """Write a tiny dataset under the four standard names; return its checksums."""
    rng = np.random.default_rng(0)
    arrays = {
        STEMS[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        STEMS[1]: (np.arange(n_train) % 10).astype(np.uint8),
        STEMS[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        STEMS[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }
    sums = {}
    for stem, array in arrays.items():
        path = folder / f"{stem}.gz"
        write_idx(path, array)
        sums[stem] = Checksum(gz_md5=md5(path.read_bytes()), raw_md5=content_md5(array))
    return sums


@pytest.fixture
def fake_mnist(monkeypatch, tmp_path):
    """Make `mnist` a tiny dataset: returns its files' bytes and installs its checksums."""
    sums = make_files(tmp_path / "originals")
    files = {stem: (tmp_path / "originals" / f"{stem}.gz").read_bytes() for stem in STEMS}

    def install(mirrors=(DEAD_MIRROR,), checksums=sums):
        entry = dataclasses.replace(catalog.CATALOG["mnist"], mirrors=mirrors, checksums=checksums)
        monkeypatch.setitem(catalog.CATALOG, "mnist", entry)
        return files

    return install


def place(files: dict[str, bytes], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, data in files.items():
        (folder / f"{stem}.gz").write_bytes(data)
    return folder


class Server(ThreadingHTTPServer):
    routes: dict[str, tuple[int, bytes, int | None]]
    hits: list[str]


class Handler(BaseHTTPRequestHandler):
    """Serves server.routes: path -> (status, body, Content-Length to claim or None)."""

    def do_GET(self):
        self.server.hits.append(self.path)
        status, body, claimed = self.server.routes.get(self.path, (404, b"not here", None))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) if claimed is None else claimed))
        self.end_headers()
        self.wfile.write(body)  # then HTTP/1.0 closes the connection, even if short

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.routes, httpd.hits = {}, []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


# ---------------------------------------------------------------- shipped and shared data


def test_mnist_sample_loads():
    data = load_dataset("mnist-sample")
    assert data.train_images.shape == (9000, 1, 28, 28)
    assert data.test_images.shape == (1000, 1, 28, 28)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert data.test_labels.shape == (1000,)
    assert data.image_shape == (1, 28, 28)
    assert data.num_classes == 10 and data.class_names == tuple("0123456789")
    assert data.source == "shipped with vaelab"
    assert "9000" in data.split and "1000" in data.split
    labels = torch.cat([data.train_labels, data.test_labels])
    counts = torch.bincount(labels).tolist()
    assert counts == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert int(data.train_images.max()) == 255  # real digits, not zeros


@pytest.mark.skipif(not FASHION.is_dir(), reason="shared Fashion-MNIST copy not present")
def test_fashion_mnist_debian_copy_passes_raw_md5():
    entry = catalog.CATALOG["fashion-mnist"]
    gz_md5 = md5((FASHION / "train-images-idx3-ubyte.gz").read_bytes())
    assert gz_md5 != entry.checksums[STEMS[0]].gz_md5  # recompressed: only the raw md5 can pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_dataset("fashion-mnist", data_dir=FASHION)
    assert data.train_images.shape == (60000, 1, 28, 28)
    assert data.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    assert data.class_names[0] == "T-shirt/top" and data.source == str(FASHION)


# ---------------------------------------------------------------- idx:PATH


def test_idx_folder(tmp_path):
    make_files(tmp_path / "mine")
    data = load_dataset(f"idx:{tmp_path / 'mine'}")
    assert data.train_images.shape == (20, 1, 28, 28) and data.test_images.shape == (10, 1, 28, 28)
    assert data.num_classes == 10 and data.class_names is None
    assert data.name == f"idx:{tmp_path / 'mine'}" and data.source == str(tmp_path / "mine")


def test_idx_single_pair_splits_90_10(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (50, 8, 8), dtype=np.uint8)
    write_idx(tmp_path / "faces-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "faces-labels-idx1-ubyte.gz", np.arange(50, dtype=np.uint8) % 3)
    data = load_dataset(f"idx:{tmp_path / 'faces-images-idx3-ubyte.gz'}")
    assert len(data.train_images) == 45 and len(data.test_images) == 5
    assert torch.equal(data.test_images[:, 0], torch.from_numpy(images[45:]))
    assert data.num_classes == 3 and data.image_shape == (1, 8, 8)
    assert "90 %" in data.split and "10 %" in data.split


def test_idx_single_without_labels_names_the_expected_file(tmp_path):
    write_idx(tmp_path / "x-images-idx3-ubyte", np.zeros((10, 4, 4), np.uint8))
    with pytest.raises(VaelabError, match="x-labels-idx1-ubyte"):
        load_dataset(f"idx:{tmp_path / 'x-images-idx3-ubyte'}")


def test_idx_refusals(tmp_path):
    with pytest.raises(VaelabError, match="neither a folder nor a file"):
        load_dataset(f"idx:{tmp_path / 'nowhere'}")
    with pytest.raises(VaelabError, match="t10k-images-idx3-ubyte"):
        load_dataset(f"idx:{tmp_path}")


def test_unknown_name_lists_valid_names():
    with pytest.raises(VaelabError, match="'cifar'.*mnist-sample, mnist, fashion-mnist, kmnist"):
        load_dataset("cifar")
    assert dataset_names() == ["mnist-sample", "mnist", "fashion-mnist", "kmnist", "shapes"]


# ---------------------------------------------------------------- look-up order


def test_lookup_order(monkeypatch, tmp_path, fake_mnist):
    files = fake_mnist()
    system = place(files, tmp_path / "system" / "mnist")
    assert load_dataset("mnist", download=False).source == str(system)
    cache = place(files, tmp_path / "home" / ".cache" / "vaelab" / "mnist")
    assert load_dataset("mnist", download=False).source == str(cache)
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "data"))
    top = place(files, tmp_path / "data")
    assert load_dataset("mnist", download=False).source == str(top)
    named = place(files, tmp_path / "data" / "mnist")
    assert load_dataset("mnist", download=False).source == str(named)
    explicit = place(files, tmp_path / "explicit")
    assert load_dataset("mnist", data_dir=explicit).source == str(explicit)
    nested = place(files, tmp_path / "parent" / "mnist")
    assert load_dataset("mnist", data_dir=tmp_path / "parent").source == str(nested)


def test_explicit_data_dir_without_files_does_not_fall_through(tmp_path, fake_mnist):
    place(fake_mnist(), tmp_path / "home" / ".cache" / "vaelab" / "mnist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VaelabError, match="empty does not hold the mnist files"):
        load_dataset("mnist", data_dir=tmp_path / "empty")


def test_xdg_cache_home_is_honoured(monkeypatch, tmp_path, fake_mnist):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = place(fake_mnist(), tmp_path / "xdg" / "vaelab" / "mnist")
    assert load_dataset("mnist", download=False).source == str(cache)


def test_uncompressed_files_are_found(tmp_path, fake_mnist):
    folder = place(fake_mnist(), tmp_path / "plain")
    for stem in STEMS:
        path = folder / f"{stem}.gz"
        (folder / stem).write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    assert len(load_dataset("mnist", data_dir=folder).train_images) == 20


def test_not_found_says_where_to_put_the_files(monkeypatch, tmp_path, fake_mnist):
    fake_mnist()
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "data"))
    with pytest.raises(VaelabError) as info:
        load_dataset("mnist", download=False)
    message = str(info.value)
    for folder in ["data/mnist", "data", "home/.cache/vaelab/mnist", "system/mnist"]:
        assert str(tmp_path / folder) in message
    assert all(f"{stem}.gz" in message for stem in STEMS) and "downloading is off" in message


def test_local_md5_mismatch_names_file_and_md5s(tmp_path, fake_mnist):
    files = fake_mnist()
    folder = place(files, tmp_path / "here")
    other = tmp_path / "other"
    make_files(other, n_train=21)  # a valid IDX file, but not the one the checksums describe
    shutil.copy(other / f"{STEMS[0]}.gz", folder / f"{STEMS[0]}.gz")
    found = md5((folder / f"{STEMS[0]}.gz").read_bytes())
    expected = catalog.CATALOG["mnist"].checksums[STEMS[0]].gz_md5
    with pytest.raises(VaelabError, match=f"{STEMS[0]}.gz.*{found}.*expected {expected}"):
        load_dataset("mnist", data_dir=folder)


def test_recompressed_copy_passes_by_raw_md5(tmp_path, fake_mnist):
    files = fake_mnist()
    recompressed = {stem: gzip.compress(gzip.decompress(data), 1) for stem, data in files.items()}
    assert recompressed[STEMS[0]] != files[STEMS[0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("mnist", data_dir=place(recompressed, tmp_path / "debian"))


def test_unknown_checksum_is_accepted_after_strict_read_with_warning(tmp_path, fake_mnist):
    files = fake_mnist(checksums={stem: Checksum() for stem in STEMS})
    folder = place(files, tmp_path / "unknown")
    with pytest.warns(UserWarning, match="no known md5"):
        assert len(load_dataset("mnist", data_dir=folder).test_images) == 10
    (folder / f"{STEMS[3]}.gz").write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x0a" + bytes(9)))
    with pytest.raises(VaelabError, match="truncated"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_dataset("mnist", data_dir=folder)


def test_describe_datasets(tmp_path, fake_mnist):
    place(fake_mnist(), tmp_path / "system" / "mnist")
    status = {row["name"]: row["status"] for row in describe_datasets()}
    assert status["mnist-sample"] == "shipped with vaelab"
    assert status["mnist"] == f"found at {tmp_path / 'system' / 'mnist'}"
    assert status["kmnist"] == f"not found: will download from {DEAD_MIRROR} on first use"
    rows = describe_datasets(data_dir=tmp_path)
    assert all(set(row) == {"name", "description", "status"} for row in rows)
    assert {row["name"]: row["status"] for row in rows}["mnist"] == f"not found in {tmp_path}"


# ---------------------------------------------------------------- downloads (127.0.0.1 only)


def test_download_on_first_use_then_cached(tmp_path, server, fake_mnist):
    files = fake_mnist(mirrors=(f"{server.url}/down/", f"{server.url}/up/"))
    server.routes = {f"/up/{stem}.gz": (200, data, None) for stem, data in files.items()}
    data = load_dataset("mnist")
    cache = tmp_path / "home" / ".cache" / "vaelab" / "mnist"
    assert data.source == str(cache) and len(data.train_images) == 20
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{stem}.gz" for stem in STEMS)
    hits = len(server.hits)
    assert hits == 8  # each file: 404 from the first mirror, then the second
    load_dataset("mnist")
    assert len(server.hits) == hits


def test_failed_download_gives_one_clear_error(tmp_path, server, fake_mnist):
    fake_mnist(mirrors=(f"{server.url}/a/",))
    with pytest.raises(VaelabError, match="download failed.*HTTP 404.*put train-images"):
        load_dataset("mnist")
    assert not any((tmp_path / "home" / ".cache" / "vaelab" / "mnist").iterdir())


BODY = gzip.compress(np.random.default_rng(0).bytes(5000))  # incompressible: ~5 kB


def test_download_good_file(tmp_path, server):
    server.routes = {"/f.gz": (200, BODY, None)}
    dest = tmp_path / "dl" / "f.gz"
    assert download_file([f"{server.url}/f.gz"], dest, Checksum(gz_md5=md5(BODY))) == dest
    assert dest.read_bytes() == BODY
    assert [p.name for p in dest.parent.iterdir()] == ["f.gz"]


def test_download_by_raw_md5(tmp_path, server):
    server.routes = {"/f.gz": (200, BODY, None)}
    dest = tmp_path / "f.gz"
    download_file([f"{server.url}/f.gz"], dest, Checksum(raw_md5=md5(gzip.decompress(BODY))))
    assert dest.read_bytes() == BODY


def test_download_wrong_checksum_leaves_nothing(tmp_path, server):
    server.routes = {"/f.gz": (200, BODY, None)}
    dest = tmp_path / "dl" / "f.gz"
    with pytest.raises(VaelabError, match=f"f.gz.*md5 is {md5(BODY)}, expected 0+ "):
        download_file([f"{server.url}/f.gz"], dest, Checksum(gz_md5="0" * 32))
    assert list(dest.parent.iterdir()) == []


def test_download_cut_connection_leaves_nothing(tmp_path, server):
    server.routes = {"/f.gz": (200, BODY[:100], len(BODY))}
    dest = tmp_path / "f.gz"
    with pytest.raises(VaelabError, match=f"closed after 100 of {len(BODY)} bytes"):
        download_file([f"{server.url}/f.gz"], dest, Checksum(gz_md5=md5(BODY)))
    assert list(tmp_path.iterdir()) == []


def test_download_cut_connection_caught_without_checksum(tmp_path, server):
    server.routes = {"/f.gz": (200, BODY[:100], len(BODY))}
    with pytest.raises(VaelabError, match="closed after 100"):
        download_file([f"{server.url}/f.gz"], tmp_path / "f.gz", Checksum())
    assert list(tmp_path.iterdir()) == []


def test_download_falls_back_to_next_mirror(tmp_path, server):
    server.routes = {"/good/f.gz": (200, BODY, None)}
    urls = [f"{server.url}/bad/f.gz", f"{server.url}/good/f.gz"]
    dest = download_file(urls, tmp_path / "f.gz", Checksum(gz_md5=md5(BODY)))
    assert dest.read_bytes() == BODY and server.hits == ["/bad/f.gz", "/good/f.gz"]


def test_download_all_mirrors_fail_names_urls_and_reason(tmp_path, server):
    urls = [f"{server.url}/a/f.gz", DEAD_MIRROR + "f.gz"]
    with pytest.raises(VaelabError) as info:
        download_file(urls, tmp_path / "f.gz", Checksum(gz_md5=md5(BODY)), timeout=5)
    assert all(url in str(info.value) for url in urls) and "last failure" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_download_without_checksum_warns(tmp_path, server):
    server.routes = {"/f.gz": (200, BODY, None)}
    with pytest.warns(UserWarning, match="no known md5"):
        download_file([f"{server.url}/f.gz"], tmp_path / "f.gz", Checksum())


def test_checksum_verdict():
    sums = Checksum(gz_md5="a", raw_md5="b")
    assert sums.verdict(lambda: "a", lambda: "x") is True
    assert sums.verdict(lambda: "x", lambda: "b") is True
    assert sums.verdict(lambda: "x", lambda: "x") is False
    assert Checksum(gz_md5="a").verdict(lambda: "x", lambda: "x") is None
    assert Checksum().verdict(lambda: "x", lambda: "x") is None
