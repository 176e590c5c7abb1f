"""The server-free explorer (vaelab.viz.explorer) in a real browser: headless Chromium through
Playwright opens the page from file://, with every request other than the file itself aborted,
and the values the page's JavaScript decoder computed are compared with PyTorch's. With
VAELAB_UPDATE_DOCS=1 set, it also refreshes docs/explorer.png (tests never write into the
repository otherwise)."""

import os
import shutil
from pathlib import Path

import pytest
import torch

from browsers import launched
from conftest import tiny_config
from vaelab.errors import VaelabError
from vaelab.models import Batch, StepContext, build_model
from vaelab.viz import explorer
from vaelab.viz.explorer import (
    explorer_fragment,
    explorer_html,
    explorer_spec,
    float16_error,
)

DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "explorer.png"
TOLERANCE = 1e-3  # max abs pixel error of the page against PyTorch
ROOT = ".vxe"

in_browser = pytest.mark.slow  # the `browser` fixture fails where Chromium is missing (browsers.py)


def trained(data, name: str, net: str, steps: int = 40, seed: int = 0, **changes):
    """A tiny model after a few Adam steps on real digits, so its decoder draws shapes; FiLM
    layers (zero at init) get random weights, so the label's per-layer path is exercised."""
    torch.manual_seed(seed)
    model = build_model(name, tiny_config(name, net, **changes))
    x, y = data
    phase = model.phases()[0]
    optimizer = torch.optim.Adam(phase.parameters, lr=1e-2)
    for step in range(steps):
        rows = slice(32 * step % len(x), 32 * step % len(x) + 32)
        loss = model.loss(phase.name, Batch(x[rows], y[rows]), StepContext()).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        for key, value in model.decoder.state_dict().items():
            if key.startswith("films."):
                value.normal_(0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def data(mnist_sample):
    x = (mnist_sample.test_images[:512].float() / 255 > 0.5).float()
    return x, mnist_sample.test_labels[:512]


def codes_of(model, data):
    x, y = data
    with torch.no_grad():
        return model.encode(x, y if model.config.num_classes else None).mean


@torch.no_grad()
def decoded(model, z, label=0) -> torch.Tensor:
    """PyTorch's decoded mean at z (D,) under `label`, flat (C*H*W)."""
    z = torch.tensor([z], dtype=torch.float32)
    y = torch.tensor([label]) if model.config.num_classes else None
    return model.decode(z, y).mean.flatten()


def max_error(page_pixels, expected: torch.Tensor) -> float:
    return (torch.tensor(page_pixels, dtype=torch.float64) - expected.double()).abs().max().item()


# ---- in the browser


@pytest.fixture(scope="module")
def browser():
    with launched() as chromium:
        yield chromium


class Opened:
    """A page opened from file:// with everything but the file aborted; what it logged."""

    def __init__(self, browser, path: Path):
        self.url = path.resolve().as_uri()
        self.errors: list[str] = []
        self.leaving: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.route("**/*", self.guard)
        self.page.on("pageerror", lambda err: self.errors.append(str(err)))
        self.page.on(
            "console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None
        )
        self.page.goto(self.url)
        self.page.wait_for_selector(f"{ROOT}[data-ready=true]", timeout=20_000)

    def guard(self, route):
        if route.request.url == self.url:
            route.continue_()
        else:
            self.leaving.append(route.request.url)
            route.abort()

    def state(self, nth: int = 0) -> dict:
        return self.page.locator(ROOT).nth(nth).evaluate("el => el.vaelab.state()")

    def counter(self, name: str, nth: int = 0) -> int:
        return int(self.page.locator(ROOT).nth(nth).get_attribute(f"data-{name}") or 0)

    def wait_past(self, name: str, count: int, nth: int = 0) -> None:
        self.page.wait_for_function(
            "([sel, n, name, count]) => Number(document.querySelectorAll(sel)[n]"
            ".getAttribute('data-' + name) || 0) > count",
            arg=[ROOT, nth, name, count],
            timeout=10_000,
        )

    def canvas(self, selector: str) -> str:
        return self.page.eval_on_selector(selector, "c => c.toDataURL()")

    def drag(self, selector: str, points: list[tuple[float, float]]) -> None:
        """Press at the first point (fractions of the element's box), move through the rest."""
        element = self.page.locator(selector).first
        element.scroll_into_view_if_needed()  # the mouse only reaches what the viewport shows
        box = element.bounding_box()
        at = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
        self.page.mouse.move(*at[0])
        self.page.mouse.down()
        for x, y in at[1:]:
            self.page.mouse.move(x, y, steps=5)
        self.page.mouse.up()

    def clean(self) -> None:
        assert self.errors == []
        assert self.leaving == []


def open_page(browser, tmp_path: Path, page_html: str, name: str = "explorer.html") -> Opened:
    path = tmp_path / name
    path.write_text(page_html, encoding="utf-8")
    return Opened(browser, path)


DECODERS = {
    "mlp-relu": ("vae", "mlp", {}),
    "mlp-tanh": ("vae", "mlp", {"activation": "tanh"}),
    "gated": ("vae", "gated", {}),
    "conv": ("vae", "conv", {}),
    "cvae-film": ("cvae", "mlp", {}),
    "cvae-conv-film": ("cvae", "conv", {}),
    "cvae-concat": ("cvae", "gated", {"conditioning": "concat"}),
    "continuous-bernoulli": ("vae", "mlp", {"likelihood": "continuous-bernoulli"}),
    "gaussian-learned": ("ae", "mlp", {"likelihood": "gaussian-learned"}),
}


@pytest.mark.parametrize("case", list(DECODERS))
@in_browser
def test_drag_decodes_as_pytorch_does(browser, data, tmp_path, case):
    name, net, changes = DECODERS[case]
    model = trained(data, name, net, **changes)
    codes = codes_of(model, data)
    opened = open_page(browser, tmp_path, explorer_html(model, codes, data[1]))
    before, count = opened.canvas(f"{ROOT} canvas.vxe-image"), opened.counter("decodes")
    start = opened.state()["z"]

    opened.drag(f"{ROOT} .vxe-plane", [(0.15, 0.2), (0.5, 0.5), (0.8, 0.7)])
    opened.wait_past("decodes", count)
    state = opened.state()
    assert state["z"] != start
    assert opened.canvas(f"{ROOT} canvas.vxe-image") != before
    assert max_error(state["pixels"], decoded(model, state["z"], state["label"])) < TOLERANCE
    # and at z far from the codes, under every label
    labels = range(model.config.num_classes or 1)
    for z in ([3.0, -2.5], [-4.0, 4.0], [0.0, 0.0]):
        for label in labels:
            pixels = opened.page.locator(ROOT).evaluate(
                "(el, [z, label]) => el.vaelab.decode(z, label)", [z, label]
            )
            assert max_error(pixels, decoded(model, z, label)) < TOLERANCE
    # the embedded encoder: a test digit to its posterior mean
    x, y = data[0][:1], data[1][:1]
    label = int(y) if model.config.num_classes else 0
    z = opened.page.locator(ROOT).evaluate(
        "(el, [x, label]) => el.vaelab.encode(x, label)", [x.flatten().tolist(), label]
    )
    with torch.no_grad():
        expected = model.encode(x, y if model.config.num_classes else None).mean[0]
    assert torch.tensor(z) == pytest.approx(expected, abs=TOLERANCE)
    opened.clean()


@in_browser
def test_float32_weights_match_to_float_precision(browser, data, tmp_path):
    model = trained(data, "vae", "conv")
    codes = codes_of(model, data)
    opened = open_page(browser, tmp_path, explorer_html(model, codes, weights="float32"))
    opened.drag(f"{ROOT} .vxe-plane", [(0.3, 0.3), (0.6, 0.8)])
    state = opened.state()
    assert max_error(state["pixels"], decoded(model, state["z"])) < 1e-5
    opened.clean()


@in_browser
def test_label_picker_changes_the_cvae_image(browser, data, tmp_path):
    model = trained(data, "cvae", "mlp")
    opened = open_page(browser, tmp_path, explorer_html(model, codes_of(model, data), data[1]))
    page = opened.page
    assert page.locator(f"{ROOT} button[data-label]").count() == 10
    before, count = opened.state(), opened.counter("decodes")

    page.click(f"{ROOT} button[data-label='7']")
    opened.wait_past("decodes", count)
    after = opened.state()
    assert after["label"] == 7 and after["z"] == before["z"]
    assert page.get_attribute(f"{ROOT} button[data-label='7']", "aria-pressed") == "true"
    assert page.get_attribute(f"{ROOT} button[data-label='0']", "aria-pressed") == "false"
    assert max_error(after["pixels"], torch.tensor(before["pixels"])) > 1e-2
    assert max_error(after["pixels"], decoded(model, after["z"], 7)) < TOLERANCE
    opened.clean()


@in_browser
def test_interpolation_strip(browser, data, tmp_path):
    model = trained(data, "vae", "mlp", latent_dim=4)
    opened = open_page(browser, tmp_path, explorer_html(model, codes_of(model, data), data[1]))
    page = opened.page
    opened.drag(f"{ROOT} .vxe-plane", [(0.2, 0.8)])
    page.get_by_role("button", name="Set A = current z").click()
    opened.drag(f"{ROOT} .vxe-plane", [(0.8, 0.2)])
    page.keyboard.press("b")  # the plane has focus: B sets the other end
    page.wait_for_selector(f"{ROOT}[data-strip='10']")
    assert page.locator(f"{ROOT} .vxe-strip canvas").count() == 10
    state = opened.state()
    a, b = torch.tensor(state["a"]), torch.tensor(state["b"])
    assert not torch.equal(a, b)
    for i in (0, 4, 9):
        cell = state["strip"][i]
        assert torch.allclose(torch.tensor(cell["z"]), a + i / 9 * (b - a), atol=1e-9)
        assert max_error(cell["pixels"], decoded(model, cell["z"])) < TOLERANCE

    count = opened.counter("decodes")
    page.locator(f"{ROOT} .vxe-strip button").nth(4).click()  # go to that z
    opened.wait_past("decodes", count)
    assert opened.state()["z"] == pytest.approx(state["strip"][4]["z"])
    opened.clean()


@in_browser
def test_keyboard_moves_the_point_and_reaches_every_control(browser, data, tmp_path):
    model = trained(data, "cvae", "mlp", latent_dim=3)
    opened = open_page(browser, tmp_path, explorer_html(model, codes_of(model, data), data[1]))
    page = opened.page
    page.focus(f"{ROOT} .vxe-plane")
    start = opened.state()["z"]
    for key in ("ArrowRight", "ArrowRight", "ArrowUp"):
        count = opened.counter("decodes")
        page.keyboard.press(key)
        opened.wait_past("decodes", count)
    moved = opened.state()["z"]
    assert moved[0] > start[0] and moved[1] > start[1] and moved[2] == start[2]
    count = opened.counter("decodes")
    page.keyboard.press("Shift+ArrowLeft")
    opened.wait_past("decodes", count)
    assert opened.state()["z"][0] < moved[0]

    slider = page.locator(f"{ROOT} input[type=range]")
    assert slider.count() == 1  # z3: the one dimension off the plane
    slider.focus()
    count = opened.counter("decodes")
    page.keyboard.press("ArrowRight")
    opened.wait_past("decodes", count)
    assert opened.state()["z"][2] != start[2]

    page.focus(f"{ROOT} button[data-label='3']")
    count = opened.counter("decodes")
    page.keyboard.press("Enter")
    opened.wait_past("decodes", count)
    assert opened.state()["label"] == 3

    # Tab walks through plane, labels, slider, drawing pad and buttons; nothing is unreachable
    focusable = page.eval_on_selector_all(
        f"{ROOT} canvas[role=application], {ROOT} button, {ROOT} input",
        "els => els.map(e => e.tabIndex >= 0 && !e.closest('[hidden]'))",
    )
    assert focusable and all(focusable)
    assert page.locator("img").count() == 0  # canvases only: no broken-image placeholders
    opened.clean()


@in_browser
def test_draw_to_encode(browser, data, tmp_path):
    model = trained(data, "vae", "mlp")
    opened = open_page(browser, tmp_path, explorer_html(model, codes_of(model, data), data[1]))
    page = opened.page
    assert page.is_disabled(f"{ROOT} button:has-text('Explore from its code')")
    opened.drag(f"{ROOT} .vxe-draw", [(0.55, 0.15), (0.5, 0.5), (0.45, 0.85)])  # a "1"
    opened.wait_past("encodes", 0)
    state = opened.state()
    grid = torch.tensor(state["drawing"], dtype=torch.float32).view(1, 1, 28, 28)
    assert grid.sum() > 10
    with torch.no_grad():
        expected = model.encode(grid).mean[0]
    assert torch.tensor(state["drawingZ"]) == pytest.approx(expected, abs=TOLERANCE)

    count = opened.counter("decodes")
    page.click(f"{ROOT} button:has-text('Explore from its code')")
    opened.wait_past("decodes", count)
    assert opened.state()["z"] == pytest.approx(state["drawingZ"])

    page.click(f"{ROOT} button:has-text('Clear')")
    page.focus(f"{ROOT} .vxe-draw")  # the keyboard pen: Space lowers it, arrows draw
    encodes = opened.counter("encodes")
    for key in ("Space", "ArrowDown", "ArrowDown", "ArrowRight"):
        page.keyboard.press(key)
    opened.wait_past("encodes", encodes)
    assert sum(opened.state()["drawing"]) > 0
    opened.clean()


@in_browser
def test_korean_page(browser, data, tmp_path):
    model = trained(data, "cvae", "mlp")
    page_html = explorer_html(model, codes_of(model, data), data[1], lang="ko")
    opened = open_page(browser, tmp_path, page_html)
    page = opened.page
    assert page.get_attribute("html", "lang") == "ko"
    assert page.title() == "vaelab 잠재 공간 탐색기"
    text = page.inner_text(ROOT)
    for phrase in ("잠재 평면", "디코딩 결과", "레이블", "그리기", "보간", "지우기"):
        assert phrase in text
    assert "Latent plane" not in text
    page.get_by_role("button", name="A = 현재 z").click()
    assert "이제 B를 정하세요" in page.inner_text(ROOT)
    opened.clean()


@in_browser
def test_several_explorers_share_a_page(browser, data, tmp_path):
    vae, cvae = trained(data, "vae", "mlp"), trained(data, "cvae", "conv")
    blocks = [
        explorer_fragment(vae, codes_of(vae, data), data[1], title="VAE"),
        explorer_fragment(cvae, codes_of(cvae, data), data[1], title="CVAE", lang="ko"),
    ]
    page_html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>two</title>'
        '<link rel="icon" href="data:,"></head><body><p>A report.</p>'
        + "<hr>".join(blocks)
        + "</body></html>"
    )
    opened = open_page(browser, tmp_path, page_html)
    page = opened.page
    assert page.locator(f"{ROOT}[data-ready=true]").count() == 2
    assert page.locator("#vaelab-explorer-style").count() == 1
    other = opened.state(1)
    count = opened.counter("decodes", 0)
    opened.drag(f"{ROOT} >> nth=0 >> .vxe-plane", [(0.2, 0.2), (0.7, 0.6)])
    opened.wait_past("decodes", count, 0)
    assert opened.state(1)["z"] == other["z"]  # the second explorer did not move
    first = opened.state(0)
    assert max_error(first["pixels"], decoded(vae, first["z"])) < TOLERANCE
    opened.clean()


@in_browser
def test_screenshot(browser, mnist_sample, tmp_path):
    """A 2-D VAE trained for two epochs of the shipped sample, with an interpolation and a
    drawing: the picture in docs/explorer.png."""
    x = (mnist_sample.train_images.float() / 255 > 0.5).float()
    model = trained((x, mnist_sample.train_labels), "vae", "mlp", steps=300, hidden=(256,))
    test = (mnist_sample.test_images[:2000].float() / 255 > 0.5).float()
    codes = codes_of(model, (test, None))
    names = mnist_sample.class_names
    page_html = explorer_html(model, codes, mnist_sample.test_labels[:2000], names)
    opened = open_page(browser, tmp_path, page_html)
    page = opened.page
    opened.drag(f"{ROOT} .vxe-plane", [(0.3, 0.35)])
    page.keyboard.press("a")
    opened.drag(f"{ROOT} .vxe-plane", [(0.7, 0.65)])
    page.keyboard.press("b")
    opened.drag(f"{ROOT} .vxe-draw", [(0.3, 0.3), (0.7, 0.3), (0.45, 0.85)])  # a "7"
    opened.wait_past("encodes", 0)
    opened.drag(f"{ROOT} .vxe-plane", [(0.45, 0.3), (0.55, 0.4)])
    page.mouse.move(0, 0)
    shot = tmp_path / "explorer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert 10_000 < shot.stat().st_size < 400_000
    if os.environ.get("VAELAB_UPDATE_DOCS"):  # refresh the docs' picture on request only
        shutil.copyfile(shot, DOCS_SCREENSHOT)
    opened.clean()


# ---- the page's content, without a browser


def test_page_is_self_contained(data):
    model = trained(data, "cvae", "conv", steps=0)
    page = explorer_html(model, codes_of(model, data), data[1])
    lowered = page.lower()
    for external in ("http://", "https://", "<img", '<link rel="stylesheet"', " src="):
        assert external not in lowered
    assert lowered.count("<script") == 1


def dtypes(spec: dict) -> list[str]:
    return [t["dtype"] for t in spec["tensors"]]


def weight_chars(spec: dict) -> int:
    return sum(len(t["data"]) for t in spec["tensors"])


def test_weights_auto_keeps_float16_where_it_decodes_within_tolerance(data, monkeypatch):
    model = trained(data, "vae", "mlp", steps=0)  # decoder: 2x32, 32, 32x784, 784
    codes = codes_of(model, data)
    spec = explorer_spec(model, codes, embed_encoder=False)
    assert dtypes(spec) == ["float32", "float32", "float16", "float32"]  # small ones float32
    assert "float16 (96.6 %) / float32 weights" in spec["facts"]
    assert 0 < float16_error(model, codes, None) < explorer.FLOAT16_TOLERANCE
    monkeypatch.setattr(explorer, "FLOAT16_TOLERANCE", 0.0)  # float16 moves pixels: refused
    assert set(dtypes(explorer_spec(model, codes, embed_encoder=False))) == {"float32"}


def test_float16_halves_the_weights(data):
    model = trained(data, "vae", "mlp", steps=0)
    codes = codes_of(model, data)
    half = weight_chars(explorer_spec(model, codes, weights="float16"))
    full = weight_chars(explorer_spec(model, codes, weights="float32"))
    assert half == pytest.approx(full / 2, rel=1e-2)
    no_encoder = explorer_spec(model, codes, weights="float16", embed_encoder=False)
    assert no_encoder["encoder"] is None and weight_chars(no_encoder) < 0.6 * half


def test_five_tour_sized_explorers_fit_in_a_report():
    """The tour's five models at the default size (400 hidden units): their explorers without
    the encoders take under 5 MB, leaving room in a report of 6 MB; with them, 9 MB."""
    tour = {"ae": 20, "vae": 20, "beta-vae": 2, "aae": 2, "cvae": 2}  # model: latent_dim
    total = 0
    for name, latent in tour.items():
        torch.manual_seed(0)
        model = build_model(name, tiny_config(name, hidden=(400,), latent_dim=latent)).eval()
        codes, labels = torch.randn(5000, latent), torch.randint(10, (5000,))
        total += len(explorer_fragment(model, codes, labels, embed_encoder=False).encode())
    assert total < 5_000_000


def test_a_model_unlike_nets_py_is_refused(data):
    model = trained(data, "vae", "mlp", steps=0)
    model.decoder.net.append(torch.nn.Softplus())
    with pytest.raises(VaelabError, match="cannot run a Softplus layer"):
        explorer_spec(model, codes_of(model, data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lang": "fr"}, "explorer language is 'fr'"),
        ({"plane": (0, 0)}, "plane is \\(0, 0\\)"),
        ({"plane": (0, 5)}, "expected two different dimensions below 2"),
        ({"codes": torch.zeros(4, 3)}, "codes have shape \\(4, 3\\)"),
        ({"labels": torch.zeros(3)}, "labels have shape"),
        ({"class_names": ["zero"]}, "class_names has 1 names: expected 10"),
        ({"weights": "int8"}, "weights is 'int8'"),
    ],
)
def test_bad_input_is_one_clear_error(data, change, message):
    model = trained(data, "cvae", "mlp", steps=0)
    args = {"codes": codes_of(model, data), "labels": data[1], **change}
    with pytest.raises(VaelabError, match=message):
        explorer_html(model, **args)
