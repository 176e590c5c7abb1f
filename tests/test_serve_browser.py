"""The latent explorer in a real browser (headless Chromium through Playwright) against the
real server, for a quickly trained 2-D VAE and a CVAE. With VAELAB_UPDATE_DOCS=1 set, it also
refreshes docs/serve.png (tests never write into the repository otherwise).

Without Chromium these tests fail; VAELAB_SKIP_BROWSER_TESTS=1 skips them (tests/browsers.py)."""

import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from browsers import launched, skip_if_opted_out
from vaelab.cli import main
from vaelab.serve import Explorer, make_app_server, server_url

DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "serve.png"
TRAIN = ["--hidden", "256", "--batch-size", "128", "--quiet", "--no-report"]

pytestmark = [pytest.mark.slow, skip_if_opted_out]


@contextmanager
def serving(run_dir: Path):
    """The real threaded server on 127.0.0.1, a free port; yields its URL."""
    server = make_app_server(Explorer.from_run(run_dir), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_url(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-runs")
    vae, cvae = ["vae", "--latent-dim", "2", "--epochs", "3"], ["cvae", "--latent-dim", "4"]
    assert main(["train", *vae, "--out", str(root / "vae"), *TRAIN]) == 0  # 3 epochs: docs/
    assert main(["train", *cvae, "--epochs", "1", "--out", str(root / "cvae"), *TRAIN]) == 0
    return root


@pytest.fixture(scope="module")
def browser():
    with launched() as chromium:
        yield chromium


def open_page(browser, url: str):
    """The loaded page and a list that collects its script errors (CSP violations included)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=20_000)
    return page, errors


def src(page, selector: str) -> str | None:
    return page.get_attribute(selector, "src")


def wait_for_new_src(page, selector: str, old: str | None) -> str:
    page.wait_for_function(
        "([sel, old]) => { const s = document.querySelector(sel).getAttribute('src');"
        " return s && s.startsWith('data:image/png') && s !== old; }",
        arg=[selector, old],
        timeout=10_000,
    )
    return src(page, selector)


def drag(page, selector: str, points: list[tuple[float, float]]) -> None:
    """Press at the first point (fractions of the element's box), move through the rest."""
    box = page.locator(selector).bounding_box()
    at = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=6)
    page.mouse.up()


def test_vae_page_drag_draw_interpolate(browser, runs, tmp_path, monkeypatch):
    from playwright.sync_api import expect

    monkeypatch.chdir(runs)  # the page names the run "vae", not a temporary path
    with serving(Path("vae")) as url:
        page, errors = open_page(browser, url)
        assert "the whole latent space" in page.inner_text("#plane-note")
        assert page.locator("#legend > span").count() == 10
        assert page.locator("#sliders input").count() == 0
        first = src(page, "#decoded")
        assert first.startswith("data:image/png")

        drag(page, "#plane", [(0.2, 0.25), (0.5, 0.5), (0.8, 0.7)])
        wait_for_new_src(page, "#decoded", first)

        drag(page, "#draw", [(0.55, 0.2), (0.5, 0.5), (0.45, 0.8)])  # a "1"
        wait_for_new_src(page, "#recon", None)
        assert page.is_enabled("#use-drawing")

        page.click("#set-a")
        drag(page, "#plane", [(0.25, 0.75), (0.6, 0.4)])
        page.click("#set-b")
        expect(page.locator("#strip img")).to_have_count(10)
        assert "NLL" not in page.inner_text("#facts")  # no eval.json in this run
        assert "test negative ELBO" in page.inner_text("#facts")

        page.screenshot(path=str(tmp_path / "vae.png"), full_page=True)
        assert (tmp_path / "vae.png").stat().st_size < 300_000
        if os.environ.get("VAELAB_UPDATE_DOCS"):  # refresh the README's picture on request only
            shutil.copyfile(tmp_path / "vae.png", DOCS_SCREENSHOT)
        assert errors == []


def test_cvae_page_label_picker_and_sliders(browser, runs, tmp_path):
    with serving(runs / "cvae") as url:
        page, errors = open_page(browser, url)
        assert page.locator("#label-buttons button").count() == 10
        assert page.locator("#sliders input").count() == 4
        assert "the two most used dimensions by KL" in page.inner_text("#plane-note")
        before = src(page, "#decoded")

        page.click("#label-buttons button[data-label='7']")
        after = wait_for_new_src(page, "#decoded", before)
        assert page.get_attribute("#label-buttons button[data-label='7']", "class") == "chosen"

        page.eval_on_selector(
            "#sliders input", "el => { el.value = 2.5; el.dispatchEvent(new Event('input')); }"
        )
        wait_for_new_src(page, "#decoded", after)

        drag(page, "#draw", [(0.3, 0.3), (0.7, 0.3), (0.4, 0.8)])  # a "7"
        wait_for_new_src(page, "#recon", None)
        page.screenshot(path=str(tmp_path / "cvae.png"), full_page=True)
        assert errors == []
