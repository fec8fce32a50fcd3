"""The example's admin console in a real browser (Playwright driving Debian's Chromium) against
the example app served live over HTTP; the secrets the pages show are used for real tokens.

Without ``/usr/bin/chromium`` these tests are skipped, unless ``M2M_TEST_BROWSER=1`` (as in CI)
makes that a failure. Screenshots of the main pages are saved under the test's ``tmp_path``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers.console import ADMIN, PASSWORD, SECRET_PATTERN, console_app
from helpers.http import LiveServer

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _need_chromium() -> None:
    if os.path.exists(CHROMIUM):
        return
    reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
    if os.environ.get("M2M_TEST_BROWSER") == "1":
        pytest.fail(f"M2M_TEST_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium (never a downloaded browser)."""
    _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def live(tmp_path: Path, live_server_factory: Callable[[Any], LiveServer]) -> Iterator[str]:
    """The example app (console included) served on a free 127.0.0.1 port; its base URL."""
    with console_app(tmp_path) as app:
        server = live_server_factory(app)
        try:
            yield server.url
        finally:
            server.stop()


def token_status(base: str, client_id: str, secret: str) -> requests.Response:
    """Ask the live server's token endpoint for a token (client_secret_basic)."""
    return requests.post(
        f"{base}/m2m/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
        timeout=10,
    )


def whoami(base: str, client_id: str, secret: str) -> dict[str, Any]:
    response = token_status(base, client_id, secret)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    answer = requests.get(
        f"{base}/api/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def assert_no_secret(html: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in html
    assert not SECRET_PATTERN.search(html)


def test_console_in_a_browser(browser: Any, live: str, tmp_path: Path) -> None:
    """Log in, create, edit, disable, enable, rotate and delete a client, read its audit
    events, with real tokens checked at every step; screenshots of each main page."""
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Script errors and console errors such as CSP violations; the 401/422 answers that the
    # test provokes are logged as "Failed to load resource" and are expected.
    page.on(
        "console",
        lambda msg: errors.append(msg.text)
        if msg.type == "error" and not msg.text.startswith("Failed to load resource")
        else None,
    )

    # Login: a stranger is sent to the login page; a wrong password is refused.
    page.goto(f"{live}/console/")
    assert "/console/login" in page.url
    page.screenshot(path=shots / "login.png", full_page=True)
    page.fill("input[name=username]", ADMIN)
    page.fill("input[name=password]", "wrong password")
    page.click("button[type=submit]")
    assert page.locator(".flash-error").inner_text() == "Wrong username or password."
    page.fill("input[name=username]", ADMIN)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live}/console/")
    assert page.locator("h1").inner_text().startswith("Clients")

    # Create a client; the secret is on the result page, and it gets real tokens.
    page.click("text=New client >> nth=0")
    page.fill("input[name=name]", "billing")
    page.fill("input[name=scopes]", "read write")
    page.fill("textarea[name=metadata]", '{"team": "payments"}')
    page.click("button:has-text('Create client')")
    assert "will not be shown again" in page.inner_text(".warning")
    client_id = page.inner_text("#client-id")
    secret = page.input_value("#client-secret")
    assert SECRET_PATTERN.fullmatch(secret)
    page.screenshot(path=shots / "created.png", full_page=True)
    assert whoami(live, client_id, secret) == {"client_id": client_id, "scopes": ["read", "write"]}

    # The copy button copies it (clipboard permission granted to this origin).
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live)
    page.click("button[data-copy=client-secret]")
    page.wait_for_function("document.querySelector('[data-copy]').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == secret

    # The list and the detail pages never show it again.
    page.goto(f"{live}/console/")
    assert page.locator("td[data-label=Name]").inner_text().startswith("billing")
    assert_no_secret(page.content(), secret)
    page.screenshot(path=shots / "list.png", full_page=True)
    page.set_viewport_size({"width": 375, "height": 740})
    page.screenshot(path=shots / "list-narrow.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.click("text=billing")
    assert_no_secret(page.content(), secret)

    # Edit: a bad scope is shown on the form; then a good change is saved.
    page.fill("input[name=scopes]", 'read "bad"')
    page.click("button:has-text('Save changes')")
    assert "Invalid scope" in page.inner_text("#scopes-error")
    page.fill("input[name=name]", "billing-v2")
    page.fill("input[name=scopes]", "read")
    page.click("button:has-text('Save changes')")
    assert "Changes saved." in page.inner_text(".flash-success")
    assert page.locator("h1").inner_text().startswith("billing-v2")
    page.screenshot(path=shots / "detail.png", full_page=True)
    page.set_viewport_size({"width": 375, "height": 740})
    page.screenshot(path=shots / "detail-narrow.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    assert whoami(live, client_id, secret)["scopes"] == ["read"]

    # Disable: the token endpoint refuses it; enable: it works again.
    page.click("button:has-text('Disable')")
    assert "DISABLED" in page.inner_text("h1 .badge").upper()
    assert token_status(live, client_id, secret).status_code == 401
    page.click("button:has-text('Enable')")
    assert "ACTIVE" in page.inner_text("h1 .badge").upper()
    assert token_status(live, client_id, secret).status_code == 200

    # Rotate with no grace: the new secret works, the old one is refused at once.
    page.fill("input[name=grace_period_seconds]", "0")
    page.click("button:has-text('Rotate secret')")
    assert "will not be shown again" in page.inner_text(".warning")
    new_secret = page.input_value("#client-secret")
    assert new_secret != secret
    assert whoami(live, client_id, new_secret)["client_id"] == client_id
    assert token_status(live, client_id, secret).status_code == 401
    page.click("text=I have saved it")
    assert_no_secret(page.content(), secret, new_secret)

    # A POST without the CSRF token, with the admin's session cookie, is refused.
    forged = page.request.post(
        f"{live}/console/clients/{client_id}/disable", form={"x": "1"}, max_redirects=0
    )
    assert forged.status == 400
    assert token_status(live, client_id, new_secret).status_code == 200

    # Audit events show every action, by the admin.
    page.click("text=Audit events")
    events = page.inner_text("table.events")
    for name in (
        "client_created",
        "client_updated",
        "client_disabled",
        "client_enabled",
        "secret_rotated",
    ):
        assert name in events
    assert f"user:{ADMIN}" in events
    assert_no_secret(page.content(), secret, new_secret)
    page.screenshot(path=shots / "events.png", full_page=True)

    # Delete, after a confirmation page; its secret stops working.
    page.click("text=← Client")
    page.click("text=Delete…")
    assert "cannot be undone" in page.inner_text("main")
    page.click("button:has-text('Delete client')")
    page.wait_for_url(f"{live}/console/")
    assert "deleted" in page.inner_text(".flash-success")
    assert "No clients yet" in page.inner_text("main")
    assert token_status(live, client_id, new_secret).status_code == 401

    # Log out.
    page.click("button:has-text('Log out')")
    assert "/console/login" in page.url
    page.goto(f"{live}/console/")
    assert "/console/login" in page.url

    assert errors == []
    for name in ("login", "created", "list", "list-narrow", "detail", "detail-narrow", "events"):
        assert (shots / f"{name}.png").stat().st_size > 1000
