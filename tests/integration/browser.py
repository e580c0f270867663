"""A headless Chromium driven by Selenium, for the webmail tests.

Debian's `chromium` and `chromium-driver` (scripts/install-engine.sh installs them); no
browser or driver download: Selenium Manager is skipped because the Service names the driver.
The browser reaches only the stack: the site's hostname resolves to the stack's address and
every other name to nothing, background services (updates, sync, safe browsing, ...) are off,
and the only certificate errors it forgives are for the stack's own server keys (SPKI pins
of state/tls/<hostname>/*.crt: the local CA stays out of any trust store).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from tests.integration.stack import NOTES, ROOT, Stack, WaitTimeoutError

# The browser itself, not /usr/bin/chromium: that wrapper adds flags from /etc/chromium.d
# (remote extensions, Google API keys) that a test browser must not have.
CHROMIUM = Path("/usr/lib/chromium/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_TIMEOUT = 30.0
# Wide enough for SOGo's "gt-md" layout: folder list, message list and message side by side.
WINDOW = (1600, 1000)
# Nothing of Chromium's own that phones home or runs in the background.
QUIET_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-client-side-phishing-detection",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--safebrowsing-disable-auto-update",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
    "--password-store=basic",
    "--lang=en-US",
)

T = TypeVar("T")


def artifacts_dir() -> Path:
    """Where screenshots go: $MAILSTACK_ARTIFACTS, by default build/artifacts/ of the checkout."""
    directory = Path(os.environ.get("MAILSTACK_ARTIFACTS") or ROOT / "build" / "artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def spki_pins(stack: Stack) -> list[str]:
    """base64(SHA-256(SubjectPublicKeyInfo)) of each server certificate of the site's hostname."""
    certs = sorted((stack.state_dir / "tls" / stack.site.hostname).glob("*.crt"))
    assert certs, f"no server certificate for {stack.site.hostname} in {stack.state_dir / 'tls'}"
    pins = []
    for path in certs:
        key = x509.load_pem_x509_certificate(path.read_bytes()).public_key()
        spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        pins.append(base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii"))
    return pins


def chromium(stack: Stack, profile: Path) -> WebDriver:
    """A headless Chromium with a fresh profile in ``profile`` that dials only the stack."""
    for program in (CHROMIUM, CHROMEDRIVER):
        assert program.is_file(), (
            f"{program} is missing: `make install` installs chromium and chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in QUIET_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    # Chromium honours the SPKI list only with a profile directory of the caller's own.
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--ignore-certificate-errors-spki-list={','.join(spki_pins(stack))}")
    # The first matching rule wins: the site's name is the stack, any other name is not found.
    options.add_argument(f"--host-resolver-rules=MAP {stack.site.hostname} {stack.host}, MAP * ~NOTFOUND")
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(profile / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    return driver


def wait_for(
    driver: WebDriver, what: str, condition: Callable[[WebDriver], T | bool], *, timeout: float = WAIT_TIMEOUT
) -> T:
    """``condition``'s first truthy value; after ``timeout`` seconds a WaitTimeoutError naming ``what``."""
    # Angular re-renders lists under the probe's feet: an element gone stale is looked up again.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    waiter: WebDriverWait[WebDriver] = WebDriverWait(
        driver, timeout, poll_frequency=0.25, ignored_exceptions=ignored
    )
    try:
        return waiter.until(condition)  # type: ignore[return-value]
    except TimeoutException:
        # The suite's own error, without chromedriver's stack of unnamed addresses.
        raise WaitTimeoutError(
            f"gave up after {timeout:.0f}s waiting for {what} ({driver.current_url})"
        ) from None


def screenshot(driver: WebDriver, step: str, *, prefix: str = "webmail") -> Path:
    """Save the page as <artifacts>/<prefix>-<step>.png and name the file in the test output."""
    path = artifacts_dir() / f"{prefix}-{step}.png"
    if not driver.save_screenshot(str(path)):
        NOTES.append(f"{prefix}: the screenshot {path} could not be taken")
        return path
    NOTES.append(f"{prefix}: screenshot {path}")
    print(f"screenshot: {path}")
    return path
