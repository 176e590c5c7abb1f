"""The latent explorer: a small Flask app over one trained model (`vaelab serve RUN`).

`create_app(explorer)` builds the app around an `Explorer` (the model, the run's facts and the
test images' codes), so tests hand it a tiny in-memory model. The page (static/) is plain
HTML/CSS/JS and fetches nothing from anywhere else.

JSON API. A latent vector `z` is a list of latent_dim numbers with |z_d| <= z_limit; `label` is
an integer in 0..num_classes-1, required by conditional models (the CVAE) and refused by the
others; images come back as "data:image/png;base64,..." URLs of the decoder's mean.

    GET  /api/info         {"facts": [[name, text], ...], "model", "latent_dim", "image_shape",
                            "conditional", "num_classes", "class_names", "z_limit", "extent",
                            "plane": {"dims": [i, j], "reason"}}
    GET  /api/points       {"dims": [i, j], "xy": [[z_i, z_j], ...], "labels": [...] | null}:
                           the test images' posterior means on the plane
    POST /api/decode       {"z", "label"?} -> {"image"}
    POST /api/encode       {"pixels": C*H*W numbers in [0, 1] (row-major), "label"?}
                           -> {"z", "image"}: the posterior mean and its reconstruction
    POST /api/interpolate  {"a", "b", "steps"? (2..32, default 10), "label"?}
                           -> {"images"}: `steps` decoded images on the line from a to b

Every error is JSON {"error": "..."}: 4xx for bad requests, 500 (no traceback) for a bug.
Safety: the Host header must name 127.0.0.1, localhost or the --host address, with the bound
port, or the answer is 403 (this stops DNS rebinding); bodies over 64 KB get 413; POST bodies
must be application/json (a cross-site form cannot send that without a CORS preflight, which
this app never grants); static files come only from static/; every response carries a
Content-Security-Policy and X-Content-Type-Options: nosniff.

`make_app_server` runs the app on waitress (serve/server.py: bounded threads, connections and
time-outs, a graceful stop on SIGTERM and Ctrl-C).
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from flask import Flask, jsonify, request
from PIL import Image
from torch import Tensor
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException, UnsupportedMediaType

from vaelab.errors import VaelabError
from vaelab.models import Model
from vaelab.run import (
    CONFIG_FILE,
    RunConfig,
    load_run,
    read_config,
    read_eval,
    read_history,
    run_dataset,
    test_set,
)
from vaelab.serve.server import ServerLimits, WaitressServer
from vaelab.viz.run_report import objective_name

STATIC = Path(__file__).resolve().parent / "static"
POINTS_LIMIT = 5000  # test images on the plane: plenty for a scatter, quick to encode
Z_LIMIT = 10.0  # |z_d| a request may ask for (more where the test codes reach further)
MAX_BODY = 64 * 1024
MAX_STEPS = 32
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
SECURITY_HEADERS = {  # on every response, the server's own refusals too
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
LOCAL_NAMES = ("127.0.0.1", "localhost")
EVAL_FACTS = {  # eval.json key -> what the page calls it
    "neg_elbo": "-ELBO, nats per image",
    "nll": "NLL, nats per image (importance-sampled)",
    "bits_per_dim": "bits/dim",
    "active_units": "active units",
    "linear_probe_accuracy": "linear probe accuracy",
    "knn_accuracy": "kNN accuracy",
}


@dataclass
class Explorer:
    """A model and what the page shows about it: the test codes, the plane, the run's facts."""

    model: Model
    codes: Tensor  # (N, D) posterior means of the test images
    labels: Tensor | None = None  # (N,) int64
    class_names: list[str] | None = None
    facts: list[tuple[str, str]] = field(default_factory=list)
    plane: tuple[int, ...] = (0, 1)  # the latent dimensions on the plane's x and y axes
    plane_reason: str = "the whole latent space"
    z_limit: float = Z_LIMIT

    @classmethod
    @torch.inference_mode()
    def from_images(
        cls,
        model: Model,
        x: Tensor,
        y: Tensor | None = None,
        class_names: list[str] | None = None,
        facts: Sequence[tuple[str, str]] = (),
    ) -> Explorer:
        """Encode the images x (N, C, H, W) and choose the plane."""
        model.eval()
        codes = model.encode(x, y).mean  # (N, D)
        plane, reason = choose_plane(model, x, y, codes)
        limit = float(max(Z_LIMIT, math.ceil(codes.abs().max().item())))
        return cls(model, codes, y, class_names, list(facts), plane, reason, limit)

    @classmethod
    def from_run(cls, run_dir: str | Path, strict_data: bool = False) -> Explorer:
        """The run's model over the first POINTS_LIMIT images of its test set (an image folder
        that changed since training: a warning, or refused with `strict_data`)."""
        run_dir = Path(run_dir)
        config, raw = read_config(run_dir)
        _, model = load_run(run_dir)
        likelihood = config.model_config.likelihood
        binarization = raw.get("binarization", config.data.resolved_binarization(likelihood))
        data = run_dataset(run_dir, config, raw, strict_data)
        x, y, names = test_set(config, binarization, data)
        n = min(POINTS_LIMIT, len(x))
        facts = run_facts(run_dir, config, model, binarization) + [
            ("points on the plane", f"the first {n} test images")
        ]
        return cls.from_images(model, x[:n], None if y is None else y[:n], names, facts)

    @property
    def latent_dim(self) -> int:
        return self.model.config.latent_dim

    @property
    def num_classes(self) -> int:
        return self.model.label_classes

    @torch.inference_mode()
    def decode(self, z: Tensor, label: int | None = None) -> Tensor:
        """Decoded means (N, C, H, W) of the codes z (N, D)."""
        y = None if label is None else torch.full((len(z),), label)
        return self.model.decode(z, y).mean

    @torch.inference_mode()
    def encode(self, x: Tensor, label: int | None = None) -> Tensor:
        """Posterior means (N, D) of the images x (N, C, H, W)."""
        y = None if label is None else torch.full((len(x),), label)
        return self.model.encode(x, y).mean

    def extent(self) -> float:
        """Half-width of the plane and the sliders: the bulk of the codes, at least +-4."""
        reach = torch.quantile(self.codes.abs().flatten().float(), 0.995).item()
        return float(min(self.z_limit, max(4, math.ceil(1.1 * reach))))

    def info(self) -> dict[str, Any]:
        return {
            "facts": [list(pair) for pair in self.facts],
            "model": self.model.name,
            "latent_dim": self.latent_dim,
            "image_shape": list(self.model.config.image_shape),
            "conditional": bool(self.num_classes),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "z_limit": self.z_limit,
            "extent": self.extent(),
            "plane": {"dims": list(self.plane), "reason": self.plane_reason},
        }

    def points(self) -> dict[str, Any]:
        xy = self.codes[:, list(self.plane)].tolist()  # (N, 1 or 2)
        return {
            "dims": list(self.plane),
            "xy": [[round(v, 4) for v in row] for row in xy],
            "labels": None if self.labels is None else self.labels.tolist(),
        }


def choose_plane(model: Model, x: Tensor, y: Tensor | None, codes: Tensor):
    """The two latent dimensions the plane shows, and why: the two the model's latent summary
    says are most used (a VAE: the highest KL per dimension; an autoencoder: the largest
    variance of the test codes)."""
    dims = codes.shape[1]
    if dims <= 2:
        return tuple(range(dims)), "the whole latent space"
    summary = model.latent_summary(x, y)
    top = torch.topk(summary.scores, 2).indices.tolist()
    a, b = summary.scores[top].tolist()
    return tuple(top), (f"z{top[0] + 1} (x) and z{top[1] + 1} (y): the two most used "
                        f"dimensions by {summary.measure} ({a:.2f} and {b:.2f})")  # fmt: skip


def run_facts(run_dir: Path, config: RunConfig, model: Model, binarization: str):
    """(name, text) pairs for the page: the run's settings, last test loss, eval.json."""
    mc = config.model_config
    facts = [
        ("run", str(run_dir)),
        ("model", config.model),
        ("dataset", config.data.dataset),
        ("latent size", str(mc.latent_dim)),
        ("net", f"{mc.net}, hidden {list(mc.hidden)}"),
        ("likelihood", mc.likelihood),
        ("binarization", binarization),
    ]
    history = read_history(run_dir)
    if history:
        last = history[-1]
        facts.append(("trained", f"epoch {last.get('epoch')}, step {last.get('step')}"))
        if "test/loss" in last:
            name = f"test {objective_name(model, binarization)}"
            facts.append((name, f"{last['test/loss']:.2f}"))
    return facts + eval_facts(read_eval(run_dir))


def eval_facts(result: dict | None) -> list[tuple[str, str]]:
    """The headline numbers of `vaelab eval`; a BCE on grayscale pixels is named as such."""
    if not isinstance(result, dict):
        return []
    facts = [
        ("eval", f"{result.get('split')} split, {result.get('images')} images, k={result.get('k')}")
    ]
    for key, name in EVAL_FACTS.items():
        for prefix, note in (("", ""), ("bce_", " (BCE on grayscale, not a likelihood)")):
            value, se = result.get(prefix + key), result.get(f"{prefix}{key}_se")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                text = f"{value:.4g}" + (f" ± {se:.2g}" if isinstance(se, float) else "")
                facts.append((name + note, text))
    return facts


def resolve_run(path: str | Path) -> tuple[Path, str | None]:
    """The run folder to serve, and a note when `path` is a tour folder (its 2-D VAE)."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        return path, None
    tour_vae = path / "models" / "vae"
    if (tour_vae / CONFIG_FILE).is_file():
        others = sorted(p.name for p in (path / "models").iterdir() if p.name != "vae")
        note = f"{path} is a tour folder: serving its 2-D VAE, {tour_vae}"
        return tour_vae, note + (
            f" (serve {path}/models/NAME for {', '.join(others)})" if others else ""
        )
    if not path.is_dir():
        raise VaelabError(f"{path} does not exist: expected a run folder or a tour folder")
    raise VaelabError(
        f"{path} is not a vaelab run or tour folder: it has no {CONFIG_FILE} "
        f"and no models/vae/{CONFIG_FILE}"
    )


def png_data_url(image: Tensor) -> str:
    """A (C, H, W) image in [0, 1] as a PNG data URL (gray for one channel, else RGB)."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(pixels if pixels.shape[2] == 3 else pixels[..., 0])
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ---- request checks: each raises a 4xx with a message a person can act on


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def json_body() -> dict[str, Any]:
    if not request.is_json:
        raise UnsupportedMediaType("send the body as JSON, with Content-Type: application/json")
    try:  # get_data enforces MAX_CONTENT_LENGTH (413)
        body = json.loads(request.get_data(cache=False), parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise BadRequest(f"the body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object, such as {"z": [0, 0]}')
    return body


def number_list(body: dict, key: str, length: int, low: float, high: float) -> Tensor:
    """body[key] as a float tensor (length,): a flat list of finite numbers in [low, high]."""
    value = body.get(key)
    if not isinstance(value, list) or len(value) != length:
        got = f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__
        raise BadRequest(f"{key} must be a list of {length} numbers, not {got}")
    for v in value:
        if type(v) not in (int, float):  # bool, str, list and None are refused
            raise BadRequest(f"{key} must hold numbers only, not {type(v).__name__}")
        if not low <= v <= high:  # NaN fails this too
            raise BadRequest(f"{key} holds {v!r}: expected finite numbers in [{low}, {high}]")
    return torch.tensor(value, dtype=torch.get_default_dtype())


def latent(body: dict, key: str, explorer: Explorer) -> Tensor:
    limit = explorer.z_limit
    return number_list(body, key, explorer.latent_dim, -limit, limit)


def label_of(body: dict, explorer: Explorer) -> int | None:
    classes, label = explorer.num_classes, body.get("label")
    if not classes:
        if label is not None:
            raise BadRequest(f"model {explorer.model.name} is not conditional: send no label")
        return None
    if type(label) is not int or not 0 <= label < classes:
        raise BadRequest(f"label must be an integer from 0 to {classes - 1}, not {label!r}")
    return label


def steps_of(body: dict) -> int:
    steps = body.get("steps", 10)
    if type(steps) is not int or not 2 <= steps <= MAX_STEPS:
        raise BadRequest(f"steps must be an integer from 2 to {MAX_STEPS}, not {steps!r}")
    return steps


# ---- the app


def create_app(explorer: Explorer, host: str = "127.0.0.1") -> Flask:
    """The explorer's app. `host` is the bound address: the Host header may name it,
    127.0.0.1 or localhost; set app.config["SERVE_PORT"] once bound to check the port too."""
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.url_map.merge_slashes = False  # "//x" is a 404, not a redirect: every answer is JSON
    allowed = {*LOCAL_NAMES, host.strip("[]").lower()}
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, ALLOWED_HOSTS=allowed, SERVE_PORT=None)
    add_guards(app)
    add_routes(app, explorer)
    return app


def split_host(value: str) -> tuple[str, int | None]:
    """'name:port' or '[v6]:port' -> (lowercase name, port); no port means 80 (plain http)."""
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        name, _, port = value.partition(":")
    if not port:
        return name.lower(), 80
    return name.lower(), int(port) if port.isdigit() else None


def plain_message(code: int, stock: str) -> str:
    return {
        404: f"no such page: {request.path}",
        405: f"{request.method} is not allowed on {request.path}",
        413: f"the body is over {MAX_BODY} bytes",
    }.get(code, stock)


def add_guards(app: Flask) -> None:
    @app.before_request
    def check_host():
        name, port = split_host(request.host)
        wanted = app.config["SERVE_PORT"]
        if name not in app.config["ALLOWED_HOSTS"] or wanted not in (None, port):
            raise Forbidden(
                f"Host {request.host!r} is not this server's address; open the "
                "page at the URL that `vaelab serve` printed"
            )

    @app.after_request
    def security_headers(response):
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        if err.code is None or err.code < 400:  # redirects pass through
            return err
        message = err.description
        if message == type(err).description:  # werkzeug's stock text: say it plainly
            message = plain_message(err.code, message)
        return jsonify(error=message), err.code

    @app.errorhandler(Exception)
    def internal_error(err: Exception):
        app.logger.exception("unexpected error on %s %s", request.method, request.path)
        return jsonify(error="internal error: the server could not answer this request"), 500


def add_routes(app: Flask, explorer: Explorer) -> None:
    shape = tuple(explorer.model.config.image_shape)

    @app.get("/")
    def index():
        return app.send_static_file("index.html")

    @app.get("/api/info")
    def info():
        return explorer.info()

    @app.get("/api/points")
    def points():
        return explorer.points()

    @app.post("/api/decode")
    def decode():
        body = json_body()
        z = latent(body, "z", explorer)
        return {"image": png_data_url(explorer.decode(z[None], label_of(body, explorer))[0])}

    @app.post("/api/encode")
    def encode():
        body = json_body()
        x = number_list(body, "pixels", math.prod(shape), 0, 1).reshape(1, *shape)
        label = label_of(body, explorer)
        z = explorer.encode(x, label)  # (1, D)
        return {"z": z[0].tolist(), "image": png_data_url(explorer.decode(z, label)[0])}

    @app.post("/api/interpolate")
    def interpolate():
        body = json_body()
        a, b = latent(body, "a", explorer), latent(body, "b", explorer)
        t = torch.linspace(0, 1, steps_of(body))[:, None]  # (S, 1)
        images = explorer.decode(a + t * (b - a), label_of(body, explorer))  # (S, C, H, W)
        return {"images": [png_data_url(image) for image in images]}


def make_app_server(
    explorer: Explorer,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServerLimits | None = None,
) -> WaitressServer:
    """The explorer's app on a waitress server (serve/server.py), bound (port 0: a free port)."""
    if not 0 <= port <= 65535:
        raise VaelabError(f"--port is {port}: expected a port from 0 to 65535")
    app = create_app(explorer, host)
    try:
        server = WaitressServer(app, host, port, limits or ServerLimits(), SECURITY_HEADERS.items())
    except (OSError, ValueError) as err:  # a busy port, an unknown name
        raise VaelabError(f"cannot listen on {host}:{port}: {err}") from None
    app.config["SERVE_PORT"] = server.port
    return server


def server_url(server: WaitressServer) -> str:
    host = {"0.0.0.0": "127.0.0.1", "::": "localhost"}.get(server.host, server.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{server.port}/"
