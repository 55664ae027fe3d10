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
from tests.support.ports import free_port
from tests.support.services import unavailable
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example"
SCREENSHOT = ROOT / "docs" / "_static" / "admin-message-list.png"
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
def example_server(tmp_path):
    """The example project's admin on a free port of 127.0.0.1, with a superuser and a queue; yields its URL."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "exampleproject.settings",
        "EXAMPLE_DB": str(tmp_path / "example.sqlite3"),
        "DJANGO_SUPERUSER_USERNAME": "admin",
        "DJANGO_SUPERUSER_PASSWORD": "admin-password",
        "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
    }
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


def test_message_list_counts_and_move_to_high_priority(browser, example_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, TIMEOUT)

    def counts():
        element = wait.until(EC.visibility_of_element_located((By.ID, "mailer-priority-counts")))
        links = element.find_elements(By.TAG_NAME, "a")
        return {link.text.split()[0]: int(link.get_attribute("data-count")) for link in links}

    browser.get(f"{example_server}/admin/login/?next=/admin/mailer/message/")
    wait.until(EC.visibility_of_element_located((By.ID, "id_username"))).send_keys("admin")
    browser.find_element(By.ID, "id_password").send_keys("admin-password")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

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
    path = SCREENSHOT if os.environ.get("MAILER_UPDATE_SCREENSHOTS") == "1" else tmp_path / SCREENSHOT.name
    path.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(path))
