"""The queue's admin page in a real browser: headless Chromium against the example project's runserver.

Needs Chromium and its driver (``apt-get install -y chromium chromium-driver``, which ``.ci/run`` does)
and Selenium (in the ``test`` extra). Without them the test is skipped; with ``MAILER_TEST_BROWSER=1``
(set by ``.ci/run``) it fails instead. ``MAILER_UPDATE_SCREENSHOTS=1`` writes the screenshot to
``docs/_static/admin-message-list.png`` (otherwise to the test's temporary directory).

The example runs on its own throw-away SQLite file (``EXAMPLE_DB``), whatever database the suite uses.
"""

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from mailer.models import PRIORITY_DEFERRED, PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_MEDIUM
from tests.support.http_recorder import recording_http_server
from tests.support.ports import free_port
from tests.support.services import unavailable
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example"
TIMEOUT = 60  # seconds, for every wait: a slow machine makes the test slow, not flaky
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,800",
]

# The example's queue: (subject, recipient, priority); queued with mailer.send_mail() by QUEUE_SCRIPT.
QUEUE = [
    ("Password reset", "ann@example.com", PRIORITY_HIGH),
    ("Weekly newsletter", "bob@example.com", PRIORITY_MEDIUM),
    ("Order shipped", "cat@example.com", PRIORITY_MEDIUM),
    ("Product survey", "dan@example.com", PRIORITY_LOW),
    ("Bounced invoice", "eve@example.com", PRIORITY_DEFERRED),
]
QUEUE_SCRIPT = f"""
import mailer
for subject, to, priority in {QUEUE!r}:
    mailer.send_mail(subject, "Hello.", "shop@example.com", [to], priority=priority)
"""


def browser_or_skip():
    """(chromium, chromedriver) paths, or skip (fail with MAILER_TEST_BROWSER=1) saying what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [name for name, found in [("chromium", chromium), ("chromedriver", driver)] if not found]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = (
            f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver; pip install selenium)"
        )
        unavailable(reason, required_by="MAILER_TEST_BROWSER")
    return chromium, driver


def manage(env, *args):
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    if done.returncode:
        pytest.fail(f"manage.py {args[0]} failed:\n{done.stdout}{done.stderr}", pytrace=False)


def wait_for_server(url, server, log):
    def answers() -> bool:
        if server.poll() is not None:
            pytest.fail(f"runserver exited:\n{log.read_text()}", pytrace=False)
        try:
            with urllib.request.urlopen(url, timeout=5):
                return True
        except OSError:
            return False

    wait_until(answers, TIMEOUT, interval=0.2, message=f"runserver did not answer {url}")


@pytest.fixture
def example_env(tmp_path):
    """The environment of the example project's commands: its settings, on a throw-away SQLite file."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "exampleproject.settings",
        "EXAMPLE_DB": str(tmp_path / "example.sqlite3"),
        "DJANGO_SUPERUSER_USERNAME": "admin",
        "DJANGO_SUPERUSER_PASSWORD": "admin-password",
        "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
    }


@pytest.fixture
def example_server(tmp_path, example_env):
    """The example project's admin on a free port of 127.0.0.1, with a superuser and a queue; yields its URL."""
    env = example_env
    manage(env, "migrate", "-v0")
    manage(env, "createsuperuser", "--noinput")
    manage(env, "shell", "-c", QUEUE_SCRIPT)

    port = free_port()
    log = tmp_path / "runserver.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=EXAMPLE,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_server(f"{base}/admin/login/", server, log)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def browser(tmp_path):
    chromium, driver_path = browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in [*CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(arg)
    # Chromium's own temporary files go under tmp_path too, not /tmp.
    service = Service(driver_path, env={**os.environ, "TMPDIR": str(tmp_path)})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def log_in(browser, base, then):
    """Log in to the example's admin as its superuser, then open the path ``then``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{base}/admin/login/?next={then}")
    WebDriverWait(browser, TIMEOUT).until(EC.visibility_of_element_located((By.ID, "id_username"))).send_keys("admin")
    browser.find_element(By.ID, "id_password").send_keys("admin-password")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()


def screenshot_path(tmp_path, name):
    """Where a screenshot goes: docs/_static/ with MAILER_UPDATE_SCREENSHOTS=1, else the test's directory."""
    path = ROOT / "docs" / "_static" / name if os.environ.get("MAILER_UPDATE_SCREENSHOTS") == "1" else tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_message_list_counts_and_move_to_high_priority(browser, example_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, TIMEOUT)

    def counts():
        element = wait.until(EC.visibility_of_element_located((By.ID, "mailer-priority-counts")))
        links = element.find_elements(By.TAG_NAME, "a")
        return {link.text.split()[0]: int(link.get_attribute("data-count")) for link in links}

    log_in(browser, example_server, "/admin/mailer/message/")
    assert counts() == {"High": 1, "Medium": 2, "Low": 1, "Deferred": 1, "Total": 5}
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert sorted(row.find_element(By.CLASS_NAME, "field-subject").text for row in rows) == sorted(
        subject for subject, _to, _priority in QUEUE
    )

    newsletter = "//tr[td[contains(@class, 'field-subject') and text()='Weekly newsletter']]"
    browser.find_element(By.XPATH, newsletter + "//input[@type='checkbox']").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("move_to_high")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()

    success = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".messagelist .success")))
    assert success.text == "1 message moved to high priority."
    assert counts() == {"High": 2, "Medium": 1, "Low": 1, "Deferred": 1, "Total": 5}
    row = browser.find_element(By.XPATH, newsletter)
    assert row.find_element(By.CLASS_NAME, "field-priority").text == "high"

    browser.find_element(By.ID, "toggle-nav-sidebar").click()  # room for every column in the screenshot
    wait.until(EC.invisibility_of_element_located((By.ID, "nav-sidebar")))
    assert browser.save_screenshot(str(screenshot_path(tmp_path, "admin-message-list.png")))


# The log's test: an HTML message with attachments, a hostile one and a blocked one, sent by the example's
# console backend. The hostile one's HTML tries to run a script (in its frame and on the admin page around it),
# to load from a loopback HTTP server the test runs ({base}), to send a form, to leave the frame.
PDF = b"%PDF-1.4 invoice " * 64
HOSTILE_HTML = """
<p id="marker">hostile marker</p>
<script>
  document.getElementById("marker").textContent = "script ran";
  try {{ parent.document.title = "pwned"; }} catch (e) {{}}
  try {{ top.pwned = 1; }} catch (e) {{}}
  new Image().src = "{base}/script-image";
</script>
<img src="{base}/remote-image.png" alt="tracking pixel">
<div style="background: url({base}/css-background)">styled</div>
<link rel="stylesheet" href="{base}/style.css">
<iframe src="{base}/inner-frame"></iframe>
<form action="{base}/form" method="post"><input name="q" value="x"><button id="go" type="submit">Go</button></form>
<meta http-equiv="refresh" content="0; url={base}/refresh">
"""
LOG_SCRIPT = """
from django.core.mail import EmailMultiAlternatives
from mailer.engine import send_all
from mailer.models import DontSendEntry

DontSendEntry.objects.create(to_address="dan@example.com")
invoice = EmailMultiAlternatives(
    "Your invoice", "Hello Ann,\\nyour invoice is attached.", "Shop <shop@example.com>", ["ann@example.com"],
    cc=["billing@example.com"], reply_to=["support@example.com"], headers={{"X-Campaign": "autumn"}},
)
invoice.attach_alternative(
    '<div style="font-family: sans-serif"><h2 style="color: #264b5d">Your invoice</h2>'
    '<p id="greeting">Hello <b>Ann</b>, your invoice is attached.</p></div>', "text/html"
)
invoice.attach("invoice.pdf", {pdf!r}, "application/pdf")
invoice.attach("notes.txt", "Paid by card.", "text/plain")
invoice.send()
hostile = EmailMultiAlternatives("Hostile HTML", "plain part", "x@example.com", ["eve@example.com"])
hostile.attach_alternative({hostile!r}, "text/html")
hostile.send()
send_all()
"""


def test_the_log_shows_an_html_message_whole_and_a_hostile_one_inert(browser, example_server, example_env, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, TIMEOUT)
    with recording_http_server() as remote:
        urllib.request.urlopen(f"{remote.base}/control", timeout=TIMEOUT).close()  # it answers
        script = LOG_SCRIPT.format(pdf=PDF, hostile=HOSTILE_HTML.format(base=remote.base))
        manage(example_env, "shell", "-c", script)

        # The log's list, at the width of a 1400-pixel screen: when, result, recipient and subject first.
        browser.set_window_size(1400, 900)
        log_in(browser, example_server, "/admin/mailer/messagelog/")
        table = wait.until(EC.visibility_of_element_located((By.ID, "result_list")))
        headers = [th.get_attribute("class") for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
        names = [name.removeprefix("column-") for h in headers for name in h.split() if name.startswith("column-")]
        assert names[:4] == ["when_attempted", "result", "to", "subject"]
        for cell in table.find_elements(By.CSS_SELECTOR, "td.field-result"):
            assert cell.rect["x"] + cell.rect["width"] <= 1400  # on screen, whatever the Message-ID
        blocked = browser.find_element(
            By.XPATH, "//tr[td[contains(@class, 'field-subject') and text()='Product survey']]"
        )
        assert blocked.find_element(By.CLASS_NAME, "field-to").text == "dan@example.com"
        browser.find_element(By.ID, "toggle-nav-sidebar").click()
        wait.until(EC.invisibility_of_element_located((By.ID, "nav-sidebar")))
        assert browser.save_screenshot(str(screenshot_path(tmp_path, "admin-log-list.png")))

        # The search box: an address in Cc, typed in another case, finds the invoice and nothing else.
        search = browser.find_element(By.ID, "searchbar")
        search.send_keys("Billing@Example.com")
        search.submit()
        wait.until(EC.url_contains("q=Billing"))
        table = wait.until(EC.visibility_of_element_located((By.ID, "result_list")))
        subjects = [cell.text for cell in table.find_elements(By.CSS_SELECTOR, "td.field-subject")]
        assert subjects == ["Your invoice"]
        assert browser.save_screenshot(str(screenshot_path(tmp_path, "admin-log-search.png")))

        def open_entry(subject):
            row = f"//tr[td[contains(@class, 'field-subject') and text()='{subject}']]"
            browser.find_element(By.XPATH, f"{row}//th//a").click()
            return wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#content h2, #content h1")))

        # The invoice: the whole email, the HTML rendered in its frame, the attachments downloadable.
        open_entry("Your invoice")
        named = "“Your invoice” to ann@example.com, billing@example.com, "  # the admin's title for it, not str()
        assert browser.title.startswith(named)
        assert named in browser.find_element(By.CSS_SELECTOR, ".breadcrumbs").text
        assert not browser.find_elements(By.NAME, "_save")  # read only
        fields = {
            name: browser.find_element(By.CSS_SELECTOR, f".field-{name} .readonly").text
            for name in ["from_address", "to", "cc", "reply_to", "subject"]
        }
        assert fields == {
            "from_address": "Shop <shop@example.com>",
            "to": "ann@example.com",
            "cc": "billing@example.com",
            "reply_to": "support@example.com",
            "subject": "Your invoice",
        }
        assert "X-Campaign" in browser.find_element(By.CSS_SELECTOR, ".field-headers .readonly").text
        links = browser.find_elements(By.CSS_SELECTOR, ".mailer-attachments a")
        assert [link.text for link in links] == ["invoice.pdf", "notes.txt"]
        cookies = "; ".join(f"{c['name']}={c['value']}" for c in browser.get_cookies())
        request = urllib.request.Request(links[0].get_attribute("href"), headers={"Cookie": cookies})
        with urllib.request.urlopen(request, timeout=TIMEOUT) as download:
            assert download.read() == PDF
            assert download.headers["Content-Disposition"] == 'attachment; filename="invoice.pdf"'
        frame = browser.find_element(By.CSS_SELECTOR, "iframe.mailer-html")
        browser.switch_to.frame(frame)
        assert wait.until(EC.visibility_of_element_located((By.ID, "greeting"))).text.startswith("Hello Ann")
        browser.switch_to.default_content()
        browser.set_window_size(1400, 1800)  # the whole page, frame and attachments included
        assert browser.save_screenshot(str(screenshot_path(tmp_path, "admin-log-message.png")))
        browser.set_window_size(1400, 900)

        # The hostile one: rendered, but no script ran, nothing was fetched, the form was not sent.
        browser.get(f"{example_server}/admin/mailer/messagelog/?q=eve%40example.com")  # found by its recipient
        title = open_entry("Hostile HTML") and browser.title
        frame = browser.find_element(By.CSS_SELECTOR, "iframe.mailer-html")
        html_url = frame.get_attribute("src")
        browser.switch_to.frame(frame)
        assert wait.until(EC.visibility_of_element_located((By.ID, "marker"))).text == "hostile marker"
        browser.find_element(By.ID, "go").click()  # a sandbox without allow-forms: nothing is sent
        assert browser.find_element(By.ID, "marker").text == "hostile marker"
        browser.switch_to.default_content()
        assert browser.title == title
        assert browser.execute_script("return typeof window.pwned") == "undefined"

        browser.get(html_url)  # on its own, outside the frame: inert too (its policy's sandbox)
        assert wait.until(EC.visibility_of_element_located((By.ID, "marker"))).text == "hostile marker"

        # The last request, made now: whatever the pages above fetched from the server came before it.
        browser.get(f"{remote.base}/after")
        requested = remote.wait_for("/after")
        assert [path for path in requested if path != "/favicon.ico"] == ["/control", "/after"]  # the browser's own
