"""The latent explorer's JSON API through Flask's test client, on tiny in-memory models."""

import base64
import io
import json
import os
import signal
import socket

import pytest
import torch
from PIL import Image

from vaelab.cli import main
from vaelab.models import build_model
from vaelab.models.cvae import CVAEConfig
from vaelab.models.vae import VAEConfig
from vaelab.serve import Explorer, create_app, resolve_run
from vaelab.serve.app import MAX_BODY, split_host
from vaelab.serve.server import WaitressServer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHAPE = (1, 28, 28)


def explorer_for(name: str, latent_dim: int = 2) -> Explorer:
    torch.manual_seed(0)
    config_class = CVAEConfig if name == "cvae" else VAEConfig
    extra = {"num_classes": 10} if name == "cvae" else {}
    config = config_class(image_shape=SHAPE, latent_dim=latent_dim, hidden=(32,), **extra)
    model = build_model(name, config)
    x, y = torch.rand(30, *SHAPE), torch.arange(30) % 10
    return Explorer.from_images(model, x, y, [f"digit {i}" for i in range(10)], [(name, "tiny")])


@pytest.fixture(scope="module")
def vae():
    return explorer_for("vae")


@pytest.fixture(scope="module")
def client(vae):
    return create_app(vae).test_client()


@pytest.fixture(scope="module")
def cvae_client():
    return create_app(explorer_for("cvae")).test_client()


def png(data_url: str) -> Image.Image:
    head, _, b64 = data_url.partition(",")
    assert head == "data:image/png;base64"
    raw = base64.b64decode(b64)
    assert raw[:8] == PNG_MAGIC
    return Image.open(io.BytesIO(raw))


def post_raw(client, path: str, text: str, content_type: str = "application/json"):
    return client.post(path, data=text, content_type=content_type)


def test_page_and_static_files_with_security_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and b'<canvas id="plane"' in page.data
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert "img-src 'self' data:" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/static/app.js").mimetype == "text/javascript"
    assert client.get("/static/style.css").mimetype == "text/css"
    assert b"http" not in client.get("/static/app.js").data  # nothing fetched from elsewhere


def test_info_and_points(client):
    info = client.get("/api/info").json
    assert info["latent_dim"] == 2 and info["plane"]["dims"] == [0, 1]
    assert info["conditional"] is False and info["image_shape"] == list(SHAPE)
    assert info["facts"] == [["vae", "tiny"]] and info["z_limit"] >= 10
    points = client.get("/api/points").json
    assert len(points["xy"]) == 30 and all(len(p) == 2 for p in points["xy"])
    assert points["labels"] == [i % 10 for i in range(30)]


def test_plane_of_a_wider_latent_is_the_two_dims_of_highest_kl():
    explorer = explorer_for("vae", latent_dim=6)
    info = create_app(explorer).test_client().get("/api/info").json
    dims = info["plane"]["dims"]
    assert len(set(dims)) == 2 and all(0 <= d < 6 for d in dims)
    assert "KL(q(z_d|x) || N(0, 1))" in info["plane"]["reason"]
    assert f"z{dims[0] + 1} (x)" in info["plane"]["reason"]


def test_decode_returns_a_png_of_the_image_shape(client, vae):
    out = client.post("/api/decode", json={"z": [0.5, -1]})
    assert out.status_code == 200
    image = png(out.json["image"])
    assert image.size == (28, 28) and image.mode == "L"
    other = client.post("/api/decode", json={"z": [3, 3]}).json["image"]
    assert other != out.json["image"]


def test_encode_returns_the_code_and_its_reconstruction(client):
    out = client.post("/api/encode", json={"pixels": [0.0] * 400 + [1] * 384})
    assert out.status_code == 200
    assert len(out.json["z"]) == 2 and all(isinstance(v, float) for v in out.json["z"])
    assert png(out.json["image"]).size == (28, 28)


def test_interpolate_runs_from_a_to_b(client):
    a, b = [-2, 1], [2, -1]
    out = client.post("/api/interpolate", json={"a": a, "b": b, "steps": 7})
    images = out.json["images"]
    assert out.status_code == 200 and len(images) == 7
    assert images[0] == client.post("/api/decode", json={"z": a}).json["image"]
    assert images[-1] == client.post("/api/decode", json={"z": b}).json["image"]
    default = client.post("/api/interpolate", json={"a": a, "b": b}).json["images"]
    assert len(default) == 10


def test_cvae_label_changes_the_image(cvae_client):
    info = cvae_client.get("/api/info").json
    assert info["conditional"] and info["num_classes"] == 10
    images = {
        cvae_client.post("/api/decode", json={"z": [0, 0], "label": c}).json["image"]
        for c in (0, 7)
    }
    assert len(images) == 2
    out = cvae_client.post("/api/encode", json={"pixels": [0.2] * 784, "label": 3})
    assert out.status_code == 200 and len(out.json["z"]) == 2
    strip = cvae_client.post("/api/interpolate", json={"a": [0, 0], "b": [1, 1], "label": 9})
    assert strip.status_code == 200


BAD_REQUESTS = [
    ("/api/decode", '{"z": [0]}', "list of 2 numbers"),
    ("/api/decode", '{"z": [0, 0, 0]}', "list of 2 numbers"),
    ("/api/decode", '{"z": []}', "list of 2 numbers"),
    ("/api/decode", '{"z": [NaN, 0]}', "NaN"),
    ("/api/decode", '{"z": [Infinity, 0]}', "Infinity"),
    ("/api/decode", '{"z": [-Infinity, 0]}', "Infinity"),
    ("/api/decode", '{"z": [1e999, 0]}', "finite"),
    ("/api/decode", '{"z": [1e6, 0]}', "finite numbers in"),
    ("/api/decode", '{"z": [10.5, 0]}', "finite numbers in"),
    ("/api/decode", '{"z": [1' + "0" * 400 + ", 0]}", "finite numbers in"),
    ("/api/decode", '{"z": ["1", 0]}', "numbers only"),
    ("/api/decode", '{"z": [true, 0]}', "numbers only, not bool"),
    ("/api/decode", '{"z": [null, 0]}', "numbers only"),
    ("/api/decode", '{"z": [[0], 0]}', "numbers only, not list"),
    ("/api/decode", '{"z": [[0, 0]]}', "list of 2 numbers"),
    ("/api/decode", '{"z": "0,0"}', "list of 2 numbers"),
    ("/api/decode", '{"z": {"0": 0, "1": 0}}', "list of 2 numbers"),
    ("/api/decode", "{}", "list of 2 numbers"),
    ("/api/decode", '{"zz": [0, 0]}', "list of 2 numbers"),
    ("/api/decode", '{"z": [0, 0], "label": 1}', "not conditional"),
    ("/api/decode", "[0, 0]", "JSON object"),
    ("/api/decode", "null", "JSON object"),
    ("/api/decode", "not json", "not valid JSON"),
    ("/api/decode", '{"z": [0, 0]', "not valid JSON"),
    ("/api/decode", "[" * 30_000 + "]" * 30_000, "not valid JSON"),  # too deep
    ("/api/encode", '{"pixels": [0.5]}', "list of 784 numbers"),
    ("/api/encode", json.dumps({"pixels": [0.5] * 783 + [1.5]}), "finite numbers in [0, 1]"),
    ("/api/encode", json.dumps({"pixels": [0.5] * 783 + [-0.1]}), "finite numbers in [0, 1]"),
    ("/api/encode", json.dumps({"pixels": [0.5] * 783 + [True]}), "numbers only"),
    ("/api/encode", '{"pixels": [' + "0," * 783 + "NaN]}", "NaN"),
    ("/api/interpolate", '{"a": [0, 0]}', "b must be a list"),
    ("/api/interpolate", '{"a": [0, 0], "b": [0, 0], "steps": 1}', "steps must be"),
    ("/api/interpolate", '{"a": [0, 0], "b": [0, 0], "steps": 1000}', "steps must be"),
    ("/api/interpolate", '{"a": [0, 0], "b": [0, 0], "steps": 5.0}', "steps must be"),
    ("/api/interpolate", '{"a": [0, 0], "b": [0, 0], "steps": true}', "steps must be"),
]


@pytest.mark.parametrize("path, body, message", BAD_REQUESTS)
def test_bad_input_is_a_4xx_with_a_clear_json_error(client, path, body, message):
    out = post_raw(client, path, body)
    assert out.status_code == 400, out.json
    assert set(out.json) == {"error"}
    if message:
        assert message in out.json["error"]
    assert "Traceback" not in out.text


@pytest.mark.parametrize(
    "label, message",
    [
        (None, "label must be an integer from 0 to 9"),
        (10, "from 0 to 9"),
        (-1, "from 0 to 9"),
        (2.0, "from 0 to 9"),
        (True, "from 0 to 9"),
        ("3", "from 0 to 9"),
        ([3], "from 0 to 9"),
    ],
)
def test_bad_label(cvae_client, label, message):
    body = {"z": [0, 0]} | ({} if label is None else {"label": label})
    out = cvae_client.post("/api/decode", json=body)
    assert out.status_code == 400 and message in out.json["error"]
    out = cvae_client.post("/api/encode", json={"pixels": [0] * 784, "label": label})
    assert out.status_code == 400 and message in out.json["error"]


def test_non_json_content_type_is_refused(client):
    out = post_raw(client, "/api/decode", '{"z": [0, 0]}', "text/plain")
    assert out.status_code == 415 and "application/json" in out.json["error"]
    out = client.post("/api/decode", data={"z": "0"})  # a form post
    assert out.status_code == 415


def test_oversized_body_is_413_json(client):
    body = json.dumps({"z": [0, 0], "pad": "x" * MAX_BODY})
    out = post_raw(client, "/api/decode", body)
    assert out.status_code == 413 and "over 65536 bytes" in out.json["error"]
    assert "X-Content-Type-Options" in out.headers


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8000",
        "127.0.0.2",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "[::2]",
    ],
)
def test_bad_host_header_is_403(client, host):
    for out in (
        client.get("/", headers={"Host": host}),
        client.post("/api/decode", json={"z": [0, 0]}, headers={"Host": host}),
    ):
        assert out.status_code == 403 and "not this server's address" in out.json["error"]


def test_host_must_name_the_bound_port_once_known(vae):
    app = create_app(vae, host="192.168.1.5")
    app.config["SERVE_PORT"] = 8123
    client = app.test_client()
    for host in ("127.0.0.1:8123", "localhost:8123", "LOCALHOST:8123", "192.168.1.5:8123"):
        assert client.get("/api/info", headers={"Host": host}).status_code == 200, host
    for host in ("127.0.0.1:8124", "localhost", "localhost:x", "10.0.0.1:8123"):
        assert client.get("/api/info", headers={"Host": host}).status_code == 403, host


def test_split_host():
    assert split_host("LocalHost:8000") == ("localhost", 8000)
    assert split_host("[::1]:9") == ("::1", 9)
    assert split_host("example") == ("example", 80)
    assert split_host("example:abc") == ("example", None)


@pytest.mark.parametrize(
    "path",
    [
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e%2fapp.py",
        "/static/..%5capp.py",
        "/static/%252e%252e/app.py",
        "/static//etc/passwd",
        "/static/../../../../etc/passwd",
        "/../app.py",
        "/app.py",
        "/static/",
    ],
)
def test_no_path_escapes_the_static_folder(client, path):
    out = client.get(path, follow_redirects=True)  # "//" redirects to "/" first
    assert out.status_code == 404 and "error" in out.json
    assert b"create_app" not in out.data and b"root:" not in out.data


def test_wrong_method_and_unknown_api_are_json(client):
    assert client.get("/api/decode").status_code == 405
    assert "not allowed" in client.get("/api/decode").json["error"]
    assert client.post("/api/info").status_code == 405
    assert client.get("/api/nope").json == {"error": "no such page: /api/nope"}


def test_unexpected_error_is_500_json_without_traceback(vae, monkeypatch):
    client = create_app(vae).test_client()

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(vae, "decode", broken)
    out = client.post("/api/decode", json={"z": [0, 0]})
    assert out.status_code == 500 and set(out.json) == {"error"}
    assert "secret" not in out.text and "Traceback" not in out.text


# ---- run folders and the command line

TRAIN = ["--latent-dim", "2", "--hidden", "32", "--max-steps", "5", "--quiet", "--no-report"]
EVAL = {
    "split": "test",
    "images": 100,
    "k": 50,
    "nll": 101.5,
    "nll_se": 0.5,
    "latent_usage_per_dim": [1],
}


@pytest.fixture(scope="module")
def tour_dir(tmp_path_factory):
    """A folder laid out like `vaelab tour`'s: runs under models/<name>/."""
    tour = tmp_path_factory.mktemp("tour")
    assert main(["train", "vae", "--out", str(tour / "models" / "vae"), *TRAIN]) == 0
    return tour


def test_serve_resolves_a_run_folder_and_a_tour_folder(tour_dir):
    run = tour_dir / "models" / "vae"
    assert resolve_run(run) == (run, None)
    resolved, note = resolve_run(tour_dir)
    assert resolved == run and "tour folder" in note and "models/vae" in note


def test_explorer_from_a_trained_run(tour_dir):
    run = tour_dir / "models" / "vae"
    (run / "eval.json").write_text(json.dumps(EVAL))
    explorer = Explorer.from_run(run)
    facts = dict(explorer.facts)
    assert facts["model"] == "vae" and facts["dataset"] == "mnist-sample"
    assert facts["latent size"] == "2"
    assert facts["NLL, nats per image (importance-sampled)"] == "101.5 ± 0.5"
    assert explorer.codes.shape == (1000, 2) and explorer.labels is not None
    client = create_app(explorer).test_client()
    assert png(client.post("/api/decode", json={"z": [0, 0]}).json["image"]).size == (28, 28)


def test_cli_serve_prints_the_url_and_stops_on_ctrl_c(tour_dir, monkeypatch, capsys):
    serve_forever = WaitressServer.serve_forever

    def interrupted(self):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as the loop starts: a graceful stop
        serve_forever(self)

    monkeypatch.setattr(WaitressServer, "serve_forever", interrupted)
    before = signal.getsignal(signal.SIGINT)
    assert main(["serve", str(tour_dir), "--port", "0"]) == 0
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    out = capsys.readouterr().out
    assert "tour folder" in out and "http://127.0.0.1:" in out and "stopped" in out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaelab: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_cli_serve_bad_input(tmp_path, tour_dir, capsys):
    assert main(["serve", "/nonexistent"]) == 2
    assert "/nonexistent does not exist" in one_error_line(capsys)
    assert main(["serve", str(tmp_path)]) == 2
    assert "not a vaelab run or tour folder" in one_error_line(capsys)
    assert main(["serve", str(tour_dir), "--port", "70000"]) == 2
    assert "--port is 70000" in one_error_line(capsys)


def test_cli_serve_on_a_busy_port_is_one_error_line(tour_dir, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tour_dir), "--port", str(port), "--quiet"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in one_error_line(capsys)
