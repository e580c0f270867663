"""Issue #14: the webmail in a real browser. Debian's Chromium, headless, driven by Selenium,
on the office stack of test_groupware (conftest's `office`, up once for both modules).

As zoe@office.test, whose password is UTF-8 (`zoë-Pässwörd-€`, typed into the form):
  1. log in through SOGo's login form: the inbox appears;
  2. a message delivered over SMTP (port 25, as from outside) shows up in the inbox list,
     opens, and its UTF-8 body is displayed;
  3. a message composed and sent in the webmail reaches jonas@office.test's INBOX (IMAP);
  4. the Calendar module lists her calendars: her own and the office calendar shared with her.

Screenshots of every step, and of any failure, go to $MAILSTACK_ARTIFACTS (default
build/artifacts/ in the checkout) as webmail-<step>.png; the run summary names them.

Run it (about 80 s here: 25 s for the stack's `up`, 25-35 s in the browser, 15 s to tear
down; a first run also builds the sogo and postgres images):

    make install   # .venv with selenium; apt installs chromium and chromium-driver
    .venv/bin/pytest -q -m integration tests/integration/test_webmail.py

It needs Docker, Debian's `chromium` and `chromium-driver`, nothing from the internet: the
browser resolves only the site's hostname (to 127.0.0.1) and trusts only the stack's own
server keys (see browser.py). SOGo's pages, scripts and styles all come from the `web` service.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec

from tests.integration.browser import chromium, screenshot, wait_for
from tests.integration.conftest import PHASE_REPORTS
from tests.integration.office import USERS
from tests.integration.stack import EXTERNAL_SENDER, NOTES, Stack, make_message, parse, token
from tests.integration.test_groupware import logs

pytestmark = pytest.mark.integration

USER, PASSWORD = USERS["ARGON2ID (UTF-8)"]  # zoe: the harder case, a UTF-8 password
RECIPIENT = USERS["SHA256-CRYPT"][0]  # jonas
# SOGo's name for a user's own calendar (SOGoLanguage English).
PERSONAL_CALENDAR = "Personal Calendar"
SHARED_CALENDAR = "Office"
DELIVERY_TIMEOUT = 60.0
# SOGo 5.12's Angular UI, by stable attributes (its templates' ng-model, name and aria-label).
LOGIN_FORM = 'form[name="loginForm"]'
USERNAME = f'{LOGIN_FORM} input[ng-model="app.creds.username"]'
PASSWORD_FIELD = f'{LOGIN_FORM} input[ng-model="app.creds.password"]'
CONNECT = f'{LOGIN_FORM} button[type="submit"]'
FOLDER_NAME = '[ng-bind="mailbox.service.selectedFolder.$displayName"]'
GET_MAIL = 'button[aria-label="Get Mail"]'
MESSAGE_BODY = "#detailView .msg-body"
COMPOSE = "md-fab-speed-dial md-fab-trigger button"
COMPOSE_INLINE = 'md-fab-actions button[aria-label="Write a new message"]'
EDITOR = "md-dialog"
TO_INPUT = f'{EDITOR} md-chips[ng-model="editor.message.editable.to"] input'
TO_CHIPS = f'{EDITOR} md-chips[ng-model="editor.message.editable.to"] md-chip'
# The address book's suggestions for what was typed (angular-material puts them under <body>).
SUGGESTIONS = ".md-autocomplete-suggestions li"
SUBJECT = f'{EDITOR} input[name="subject"]'
# Plain-text or HTML (CKEditor 5) composition, whichever the user's preference gives.
CONTENT = f'{EDITOR} textarea[name="content"], {EDITOR} .ck-editor__editable[contenteditable="true"]'
SEND = f'{EDITOR} button[ng-click="editor.send()"]'
CALENDAR_MODULE = 'a.md-button[href*="/Calendar"]'
CALENDAR_ITEM = "md-list-item.sg-calendar-list-item"


def css(selector: str) -> tuple[str, str]:
    return (By.CSS_SELECTOR, selector)


def wait_for_text(driver: WebDriver, what: str, selector: str, text: str) -> None:
    wait_for(driver, what, ec.text_to_be_present_in_element(css(selector), text))


def webmail_url(stack: Stack) -> str:
    """The webmail under the site's real name (the browser maps it to the stack's address)."""
    return f"https://{stack.site.hostname}:{stack.ports['https']}/SOGo/"


def calendar_names(driver: WebDriver) -> list[str]:
    """The names of the calendars the Calendar module lists: the user's own, then her
    subscriptions (a calendar shared with her appears there once subscribed)."""
    names = driver.find_elements(By.CSS_SELECTOR, f'{CALENDAR_ITEM} span[ng-bind="$ctrl.calendar.name"]')
    return [text for element in names if (text := element.text.strip())]


def log_in(driver: WebDriver, stack: Stack, user: str, password: str) -> None:
    driver.get(webmail_url(stack))
    wait_for(driver, "SOGo's login form", ec.visibility_of_element_located(css(USERNAME))).send_keys(user)
    driver.find_element(*css(PASSWORD_FIELD)).send_keys(password)
    screenshot(driver, "login")
    wait_for(driver, "the login form's connect button", ec.element_to_be_clickable(css(CONNECT))).click()
    wait_for(driver, f"SOGo to open {user}'s mail after the login", ec.url_contains("/Mail"))


def open_mail(driver: WebDriver, stack: Stack) -> None:
    """The mail view afresh (SOGo sends a logged-in user there): no dialog of a test before."""
    driver.get(webmail_url(stack))
    wait_for(driver, "the message list", ec.visibility_of_element_located(css("#messagesList")))


def recipient_added(driver: WebDriver, address: str) -> bool:
    """Whether ``address`` is a recipient chip yet; picks the address book's suggestion for it
    when one shows (SOGo also turns a typed address that matches one contact into a chip)."""
    if any(address in chip.text for chip in driver.find_elements(*css(TO_CHIPS))):
        return True
    for shown in driver.find_elements(*css(SUGGESTIONS)):
        if address in shown.text and shown.is_displayed():
            shown.click()
            break
    return False


def message_in_list(driver: WebDriver, subject: str) -> WebElement:
    """The inbox list's entry for ``subject``, pressing "Get Mail" every few seconds until
    it is there (SOGo does not poll the server on its own by default)."""
    item = css(f'md-list-item.sg-message-list-item[aria-label="{subject}"]')
    last_refresh = [time.monotonic()]

    def listed(d: WebDriver) -> WebElement | bool:
        found = d.find_elements(*item)
        if found and found[0].is_displayed():
            return found[0]
        if time.monotonic() - last_refresh[0] > 3:
            d.find_element(*css(GET_MAIL)).click()
            last_refresh[0] = time.monotonic()
        return False

    return wait_for(driver, f"{subject!r} in the inbox list", listed)


@pytest.fixture(scope="module")
def browser(office: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    assert office.up_error is None, office.up_error
    started = time.monotonic()
    driver = chromium(office, tmp_path_factory.mktemp("chromium"))
    try:
        yield driver
    finally:
        driver.quit()
        NOTES.append(f"webmail: the browser session took {time.monotonic() - started:.1f}s")


@pytest.fixture(scope="module")
def logged_in(office: Stack, browser: WebDriver) -> WebDriver:
    """zoe, logged in through the form; the tests below go on in this one browser session."""
    try:
        log_in(browser, office, USER, PASSWORD)
    except Exception:
        # A module fixture is set up before screenshot_on_failure (a function fixture) is.
        screenshot(browser, "login-failed")
        print(logs(office))
        raise
    return browser


@pytest.fixture(autouse=True)
def screenshot_on_failure(
    request: pytest.FixtureRequest, office: Stack, browser: WebDriver
) -> Iterator[None]:
    yield
    reports = request.node.stash.get(PHASE_REPORTS, {})
    if any(report.failed for report in reports.values()):
        screenshot(browser, f"{request.node.name}-failed")
        print(logs(office))


def test_the_login_form_opens_the_inbox(logged_in: WebDriver) -> None:
    wait_for(logged_in, "the message list", ec.visibility_of_element_located(css("#messagesList")))
    wait_for_text(logged_in, "the inbox to be the open folder", FOLDER_NAME, "Inbox")
    screenshot(logged_in, "inbox")


def test_a_message_delivered_over_smtp_opens_in_the_webmail(office: Stack, logged_in: WebDriver) -> None:
    subject = token("webmail read")
    body = f"Grüße aus dem Büro: déjà vu, 5 € ✓ ({subject})\n"
    office.deliver(make_message(EXTERNAL_SENDER, USER, subject, body, domain="sender-itest.test"))
    # Over IMAP first: a delivery problem is not the browser's.
    office.wait_for_message(USER, subject, timeout=DELIVERY_TIMEOUT)
    open_mail(logged_in, office)
    message_in_list(logged_in, subject).click()
    wait_for_text(
        logged_in, "the UTF-8 body in the reading pane", MESSAGE_BODY, "Grüße aus dem Büro: déjà vu, 5 € ✓"
    )
    screenshot(logged_in, "read")


def test_a_message_sent_from_the_webmail_arrives(office: Stack, logged_in: WebDriver) -> None:
    subject = token("webmail sent")
    text = "Hallo Jonas, gesendet über SOGo ✓"
    open_mail(logged_in, office)
    wait_for(logged_in, "the compose button", ec.element_to_be_clickable(css(COMPOSE))).click()
    wait_for(logged_in, "'Write a new message'", ec.element_to_be_clickable(css(COMPOSE_INLINE))).click()
    to = wait_for(logged_in, "the editor's To field", ec.visibility_of_element_located(css(TO_INPUT)))
    # As a user does: type, then take the address book's suggestion (Return before the
    # suggestions come is swallowed by the editor).
    to.send_keys(RECIPIENT)
    wait_for(logged_in, f"{RECIPIENT} as a recipient", lambda d: recipient_added(d, RECIPIENT))
    logged_in.find_element(*css(SUBJECT)).send_keys(subject)
    content = wait_for(logged_in, "the message editor", ec.element_to_be_clickable(css(CONTENT)))
    content.click()
    content.send_keys(text)
    screenshot(logged_in, "compose")
    wait_for(logged_in, "the editor's send button", ec.element_to_be_clickable(css(SEND))).click()
    wait_for(logged_in, "the editor to close after sending", ec.invisibility_of_element_located(css(EDITOR)))
    screenshot(logged_in, "sent")

    received = parse(office.wait_for_message(RECIPIENT, subject, timeout=DELIVERY_TIMEOUT))
    assert USER in str(received["From"]), received["From"]
    part = received.get_body(("plain", "html"))
    assert part is not None, received
    assert text in html.unescape(str(part.get_content())), part.get_content()


def test_the_calendar_module_lists_the_users_calendars(office: Stack, logged_in: WebDriver) -> None:
    open_mail(logged_in, office)
    wait_for(
        logged_in, "the Calendar module's button", ec.element_to_be_clickable(css(CALENDAR_MODULE))
    ).click()
    wait_for(logged_in, "the Calendar module to open", ec.url_contains("/Calendar"))
    wait_for(logged_in, "the calendar list", ec.visibility_of_element_located(css(CALENDAR_ITEM)))
    names = wait_for(
        logged_in, "the calendar list to name its calendars", lambda d: calendar_names(d) or False
    )
    screenshot(logged_in, "calendar")
    NOTES.append(f"webmail: calendars listed for {USER}: {names}")
    assert PERSONAL_CALENDAR in names, names
    # office@'s calendar, which examples/office.yaml shares with her (read).
    assert SHARED_CALENDAR in names, names
