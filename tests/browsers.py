"""Headless Chromium for the browser tests (Playwright driving Debian's /usr/bin/chromium).

Chromium missing is a failure, not a skip: `make test` installs it when run as root, and the
message says what to install otherwise. VAELAB_SKIP_BROWSER_TESTS=1 opts out: the browser tests
then skip with that reason.
"""

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
OPT_OUT = "VAELAB_SKIP_BROWSER_TESTS"


def opted_out() -> bool:
    return os.environ.get(OPT_OUT) == "1"


skip_if_opted_out = pytest.mark.skipif(opted_out(), reason=f"{OPT_OUT}=1: browser tests off")


@contextmanager
def launched():
    """A running headless Chromium (a Playwright Browser); skips if opted out, else fails where
    Chromium is missing."""
    if opted_out():
        pytest.skip(f"{OPT_OUT}=1: browser tests off")
    if not CHROMIUM.is_file():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install it (apt-get install chromium; `make test` does "
            f"so when run as root) or set {OPT_OUT}=1 to skip the browser tests",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright  # a test dependency: missing is an error

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
