"""``mailer.contrib.anymail``'s system checks, and ``mailer`` without django-anymail installed."""

import json
import subprocess
import sys

import pytest

from mailer.contrib.anymail.checks import check_anymail
from tests.support.procs import REPO_ROOT, project_env


def ids(messages):
    return [message.id for message in messages]


@pytest.mark.parametrize("value", [None, (3, 7), [1, 1]])
def test_valid_soft_bounce_limits(settings, value):
    settings.MAILER_SOFT_BOUNCE_LIMIT = value
    assert check_anymail() == []


@pytest.mark.parametrize("value", [3, (3,), (0, 7), (3, 0), (3, 1.5), ("3", "7"), (True, 7), "3/7d"])
def test_invalid_soft_bounce_limits(settings, value):
    settings.MAILER_SOFT_BOUNCE_LIMIT = value
    [error] = check_anymail()
    assert error.id == "mailer.E016"
    assert repr(value) in error.msg


# A project whose Python cannot import django-anymail (it stands for one where it is not installed).
WITHOUT_ANYMAIL = """
import sys
sys.modules["anymail"] = None  # "import anymail" raises ImportError, find_spec() finds nothing
import django
from django.core.management import call_command
from django.core.management.base import SystemCheckError
django.setup()
call_command("migrate", verbosity=0)
import mailer
from mailer.engine import send_all
from mailer.models import DontSendEntry
DontSendEntry.objects.create(to_address="Listed@example.org")
mailer.send_mail("subject", "body", "from@example.org", ["listed@example.org", "to@example.org"])
print("sent", send_all().sent)
try:
    call_command("check")
except SystemCheckError as exc:
    print(exc)
else:
    print("no error")
"""


def run_without_anymail(tmp_path, installed_apps):
    env = project_env(
        {
            "MAILER_TEST_DB": "sqlite",
            "MAILER_TEST_DB_NAME": tmp_path / "db.sqlite3",
            "MAILER_TEST_LOCK_PATH": tmp_path / "send_mail",
            "MAILER_TEST_SETTINGS": json.dumps({"INSTALLED_APPS": installed_apps}),
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_ANYMAIL], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


APPS = ["django.contrib.contenttypes", "django.contrib.auth", "mailer"]


def test_mailer_works_without_anymail(tmp_path):
    out = run_without_anymail(tmp_path, APPS)
    assert out.startswith("sent 1\n")  # the listed address was left out
    assert out.endswith("System check identified no issues (0 silenced).\nno error\n")


def test_the_app_says_what_is_missing_without_anymail(tmp_path):
    out = run_without_anymail(tmp_path, [*APPS, "mailer.contrib.anymail"])
    assert out.startswith("sent 1\n")
    assert "mailer.E015" in out
    assert "django-anymail is not installed" in out
    assert "pip install django-anymail" in out
