"""Rows written by django-mailer 2.x (unsigned pickles): the settings that decide what is decoded.

``MAILER_ALLOW_LEGACY_DATA`` (default True) turns decoding them off altogether;
``MAILER_LEGACY_EXTRA_CLASSES`` lets them contain ``EmailMessage`` subclasses of other packages, here
django-anymail's ``AnymailMessage`` with tags and metadata, the way 2.x pickled it.
"""

import pytest
from anymail.message import AnymailMessage
from django.core import mail

from mailer import serialization
from mailer.engine import send_all
from mailer.models import RESULT_FAILURE, Message, MessageLog, make_message
from tests.support.pickles import legacy_2x

pytestmark = pytest.mark.django_db

ANYMAIL_CLASSES = ["anymail.message.AnymailMessage", "anymail.message.AnymailStatus", "anymail.utils.UNSET"]


def anymail_row():
    email = AnymailMessage("Tagged", "Body", "f@example.org", ["a@example.org"], tags=["welcome"])
    email.metadata = {"user_id": 42}
    return Message.objects.create(message_data=legacy_2x(email, protocol=2))


def test_a_legacy_anymail_message_is_refused_by_default_and_kept_in_the_log():
    row = anymail_row()
    with pytest.raises(serialization.UndecodableMessage, match="MAILER_LEGACY_EXTRA_CLASSES"):
        serialization.loads(row.message_data)

    result = send_all()
    assert (result.sent, result.failed) == (0, 1)
    log = MessageLog.objects.get()
    assert log.result == RESULT_FAILURE
    assert "anymail.message.AnymailMessage" in log.log_message
    assert log.message_data == row.message_data  # the raw row, for inspection


def test_allowed_extra_classes_are_decoded_and_sent(settings):
    settings.MAILER_LEGACY_EXTRA_CLASSES = ANYMAIL_CLASSES
    anymail_row()
    assert send_all().sent == 1
    [sent] = mail.outbox
    assert type(sent) is AnymailMessage
    assert (sent.subject, sent.tags, sent.metadata) == ("Tagged", ["welcome"], {"user_id": 42})


def test_a_function_is_never_an_extra_class(settings, tmp_path):
    marker = tmp_path / "ran"
    settings.MAILER_LEGACY_EXTRA_CLASSES = ["os.system", "posix.system"]

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    with pytest.raises(serialization.UndecodableMessage, match="posix.system"):
        serialization.loads(legacy_2x(Exploit(), protocol=2))
    assert not marker.exists()


def test_legacy_data_can_be_refused_altogether(settings):
    old = Message.objects.create(message_data=legacy_2x(make_message(subject="old", to=["a@example.org"]).email))
    new = make_message(subject="new", to=["b@example.org"])
    new.save()
    settings.MAILER_ALLOW_LEGACY_DATA = False

    result = send_all()

    assert (result.sent, result.failed) == (1, 1)
    assert [email.subject for email in mail.outbox] == ["new"]
    failure = MessageLog.objects.get(result=RESULT_FAILURE)
    assert "MAILER_ALLOW_LEGACY_DATA is False" in failure.log_message
    assert failure.message_data == old.message_data
