"""Rows planted with raw SQL, whose loading would create a marker file, go through every place that decodes.

The planted rows: a django-mailer 2.x style base64 pickle calling ``os.system``, a raw pickle calling
``eval``, a pickle that walks from an allowed class to code through a dotted name, and our signed format
with a valid-looking prefix but a forged signature over a pickle that calls ``os.system``. Each is planted
in ``mailer_message`` and in ``mailer_messagelog``, with SQL, as an attacker with write access to the
tables (or an SQL injection elsewhere) would. Then: the admin's list and change pages of both models, as
a superuser; ``str()`` of both; ``MessageLog.email``; the ``retry_deferred`` and ``send_mail`` commands;
``send_all()``. The marker never appears, a good message queued after the planted ones is still sent,
and each planted queue row ends up in the log as a failure naming the reason, with its raw data.
"""

import base64
import pickle

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from mailer import serialization
from mailer.engine import send_all
from mailer.models import PRIORITY_DEFERRED, RESULT_FAILURE, Message, MessageLog, make_message
from tests.support.pickles import EvalCall, SystemCall, dotted_name_exploit, legacy_2x, legacy_raw

pytestmark = pytest.mark.django_db


def payloads(marker):
    forged = base64.b64encode(pickle.dumps(SystemCall(marker))).decode("ascii")
    return {
        "2x-base64": legacy_2x(SystemCall(marker), 2),
        "raw-pickle": legacy_raw(EvalCall(marker), 0),
        "dotted-name": base64.encodebytes(dotted_name_exploit(marker)).decode("ascii"),
        "forged-signature": f"{serialization.PREFIX}{forged}:{'A' * 27}",
    }


def plant(table, data, priority=2, extra=""):
    """INSERT a row with raw SQL (no model code involved); return its id."""
    now = timezone.now()
    columns = "message_data, when_added, priority" + (", when_attempted, result, log_message" if extra else "")
    values = [data, now, priority] + ([now, RESULT_FAILURE, extra] if extra else [])
    with connection.cursor() as cursor:
        placeholders = ", ".join(["%s"] * len(values))
        retry = ", retry_count" if table == "mailer_message" else ""
        cursor.execute(
            f"INSERT INTO {table} ({columns}{retry}) VALUES ({placeholders}{', 0' if retry else ''})", values
        )
    model = Message if table == "mailer_message" else MessageLog
    return model.objects.order_by("-id").values_list("id", flat=True).first()


@pytest.fixture
def planted(tmp_path):
    marker = tmp_path / "pwned"
    rows = {}
    for name, data in payloads(marker).items():
        if "\x00" in data and connection.vendor == "postgresql":
            continue  # PostgreSQL text cannot hold NUL: such a row cannot exist there
        rows[name] = (plant("mailer_message", data), plant("mailer_messagelog", data, extra="planted"), data)
    good = make_message(subject="good one", to=["ann@example.org"])
    good.save()
    yield marker, rows
    assert not marker.exists(), "a planted pickle ran"


def test_guard_the_payloads_are_real(tmp_path):
    """Loaded with plain pickle, each payload does create the marker: the tests below would notice."""
    for obj in (SystemCall(tmp_path / "a"), EvalCall(tmp_path / "b")):
        pickle.loads(pickle.dumps(obj))
    assert (tmp_path / "a").exists() and (tmp_path / "b").exists()


def test_admin_pages(admin_client, planted):
    marker, rows = planted
    response = admin_client.get(reverse("admin:mailer_message_changelist"))
    assert response.status_code == 200
    assert "good one" in response.content.decode()
    assert admin_client.get(reverse("admin:mailer_messagelog_changelist")).status_code == 200
    for message_id, log_id, _data in rows.values():
        assert admin_client.get(reverse("admin:mailer_message_change", args=[message_id])).status_code == 200
        assert admin_client.get(reverse("admin:mailer_messagelog_change", args=[log_id])).status_code == 200
    assert not marker.exists()


def test_str_email_and_properties(planted):
    marker, rows = planted
    for message_id, log_id, _data in rows.values():
        message, log = Message.objects.get(pk=message_id), MessageLog.objects.get(pk=log_id)
        assert str(message) == "<Message repr unavailable>"
        assert (message.email, message.to_addresses, message.subject) == (None, [], "")
        assert (log.email, log.to_addresses, log.subject) == (None, None, None)
        assert str(log).startswith("On ")
    assert not marker.exists()


def test_commands_and_send_all(planted):
    marker, rows = planted
    Message.objects.filter(pk__in=[ids[0] for ids in rows.values()]).update(priority=PRIORITY_DEFERRED)
    call_command("retry_deferred")
    assert Message.objects.filter(priority=PRIORITY_DEFERRED).count() == 0

    call_command("send_mail")

    assert [email.subject for email in mail.outbox] == ["good one"]  # the run went on
    assert Message.objects.count() == 0  # every planted row left the queue...
    for name, (_message_id, _log_id, data) in rows.items():
        # ...into the log, as a failure with the reason and the raw data.
        failure = MessageLog.objects.exclude(log_message="planted").get(message_data=data)
        assert failure.result == RESULT_FAILURE, name
        assert "failure in converting from DB" in failure.log_message, name
        reason = "bad signature" if name == "forged-signature" else "may not contain"
        assert reason in failure.log_message, (name, failure.log_message)
    assert not marker.exists()
    assert send_all().sent == 0
