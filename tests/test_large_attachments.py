"""Large attachments kept in a Django storage (``MAILER_STORAGE``), out of the queue and log rows.

Real databases, a real ``FileSystemStorage`` under ``tmp_path`` and a real SMTP server (aiosmtpd) on loopback.
"""

import base64
import hashlib
import os
import pickle
from unittest import mock

import pytest
from django.core import mail
from django.core.checks import run_checks
from django.core.mail import EmailMessage
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend
from django.core.management import call_command
from django.db import connection

from mailer import serialization, storage
from mailer.engine import send_all
from mailer.models import RESULT_FAILURE, RESULT_SUCCESS, Message, MessageLog, make_message
from mailer.row_size import MessageTooLarge
from tests.support import backends

pytestmark = pytest.mark.django_db(transaction=True)  # files are deleted once the deletion commits

MiB = 1024 * 1024


@pytest.fixture
def files(settings, tmp_path):
    """``MAILER_STORAGE`` set to a FileSystemStorage alias under ``tmp_path``; the value is its directory."""
    location = tmp_path / "storage"
    settings.STORAGES = {
        **settings.STORAGES,
        "mail": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(location)}},
    }
    settings.MAILER_STORAGE = "mail"
    location.mkdir()
    return location


def stored_files(location):
    return sorted(path for path in location.rglob("*") if path.is_file())


def big_email(content, subject="report", mimetype="application/pdf", filename="report.pdf"):
    email = EmailMessage(subject, "See the attachment.", "from@example.org", ["to@example.org"])
    email.attach(filename, content, mimetype)
    return email


def received_attachment(message):
    [part] = list(message.iter_attachments())
    return part.get_filename(), part.get_content()


@pytest.fixture
def database_limit(request):
    """MariaDB at its default max_allowed_packet (16 MiB); other databases as they are."""
    if connection.vendor == "mysql":
        request.getfixturevalue("packet_limit")


def test_a_20_mib_attachment_is_kept_out_of_the_rows_and_arrives_whole(files, smtp_settings, database_limit):
    content = os.urandom(20 * MiB)
    big_email(content).send()
    [queued] = Message.objects.all()
    assert len(queued.message_data) < 8 * 1024
    assert len(stored_files(files)) == 1

    assert send_all().sent == 1
    [received] = smtp_settings.messages
    filename, arrived = received_attachment(received.message)
    assert filename == "report.pdf"
    assert hashlib.sha256(arrived).digest() == hashlib.sha256(content).digest() and arrived == content

    [log] = MessageLog.objects.all()
    assert log.result == RESULT_SUCCESS and len(log.message_data) < 8 * 1024
    assert len(stored_files(files)) == 1  # the log's copy refers to it
    call_command("purge_mail_log", "0")
    assert not MessageLog.objects.exists()
    assert stored_files(files) == []


def test_text_and_small_attachments(files, smtp_settings, settings):
    settings.MAILER_STORAGE_THRESHOLD = 1000
    email = big_email("é" * 2000, mimetype="text/plain", filename="notes.txt")
    email.attach("small.bin", b"tiny", "application/octet-stream")
    email.send()
    assert len(stored_files(files)) == 1  # the small one stays in the row
    assert send_all().sent == 1
    [received] = smtp_settings.messages
    parts = {part.get_filename(): part.get_content() for part in received.message.iter_attachments()}
    parts["notes.txt"] = parts["notes.txt"].rstrip("\r\n")  # Django 6.0 ends a text part with a line break
    assert parts == {"notes.txt": "é" * 2000, "small.bin": b"tiny"}


def test_without_log_data_the_file_goes_once_sent(files, smtp_settings, settings):
    settings.MAILER_EMAIL_LOG_MESSAGE_DATA = False
    big_email(os.urandom(300 * 1024)).send()
    assert len(stored_files(files)) == 1
    assert send_all().sent == 1
    assert len(smtp_settings.messages) == 1
    assert stored_files(files) == []


def test_at_the_threshold_the_attachment_stays_in_the_row(files, settings):
    settings.MAILER_STORAGE_THRESHOLD = 1000
    big_email(os.urandom(1000)).send()
    assert stored_files(files) == []
    assert len(Message.objects.get().message_data) > 1000


def test_without_storage_nothing_changes(settings, tmp_path):
    email = big_email(os.urandom(300 * 1024))
    email.send()
    data = Message.objects.get().message_data
    assert not storage.may_refer(data)
    assert serialization.loads(data).attachments[0][1] == email.attachments[0][1]


def test_deleting_rows_deletes_files_no_row_refers_to(files, failures):
    failures["kept"] = OSError("relay down")  # a failure log row, the message stays queued
    for subject in ("kept", "gone", "gone too"):
        big_email(os.urandom(300 * 1024), subject=subject).send()
    assert len(stored_files(files)) == 3
    send_all()
    assert MessageLog.objects.filter(result=RESULT_FAILURE).count() == 1
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == 2
    assert len(stored_files(files)) == 3

    MessageLog.objects.filter(result=RESULT_FAILURE).delete()  # the queue row still refers to its file
    assert len(stored_files(files)) == 3
    Message.objects.get().delete()  # the last row of "kept": as the admin deletes one object
    assert len(stored_files(files)) == 2
    MessageLog.objects.order_by("pk").first().delete()
    assert len(stored_files(files)) == 1
    MessageLog.objects.all().delete()  # as the admin's "delete selected" does
    assert stored_files(files) == []


def test_a_queued_message_keeps_its_file_when_another_row_is_deleted(files):
    big_email(os.urandom(300 * 1024), subject="one").send()
    big_email(os.urandom(300 * 1024), subject="two").send()
    Message.objects.filter(pk=Message.objects.order_by("pk")[0].pk).delete()
    assert len(stored_files(files)) == 1
    assert mail.outbox == []
    sizes = []  # of the attachment each email had when the backend got it (Django 4.2's locmem keeps the object)
    with mock.patch.object(
        LocmemBackend,
        "send_messages",
        autospec=True,
        side_effect=lambda self, emails: sizes.extend(len(email.attachments[0][1]) for email in emails) or len(emails),
    ):
        send_all()
    assert sizes == [300 * 1024]
    assert not Message.objects.exists()  # sent, with its file: not held back


def test_a_missing_file_holds_the_message_back(files, caplog):
    big_email(os.urandom(300 * 1024)).send()
    [path] = stored_files(files)
    path.unlink()
    big_email(b"small", subject="fine").send()
    assert send_all().sent == 1
    assert [email.subject for email in mail.outbox] == ["fine"]
    assert Message.objects.count() == 1  # held back, not discarded
    assert "cannot be read from storage 'mail'" in caplog.text


def test_unsigned_data_cannot_refer_to_a_stored_file(files):
    """A 2.x-format (unsigned) row is decoded by the restricted unpickler, which builds no reference; and a
    row whose signature fails never has its references' files deleted."""
    big_email(os.urandom(300 * 1024)).send()
    signed = Message.objects.get().message_data
    email = serialization.loads(signed)
    legacy = base64.b64encode(pickle.dumps(email, protocol=2)).decode("ascii")
    with pytest.raises(serialization.UndecodableMessage, match="mailer.storage.StoredAttachment"):
        serialization.loads(legacy)
    forged = signed[: signed.rindex(":") + 1] + "A" * 43
    assert storage.may_refer(forged) and storage.tokens_in(forged) == set()
    Message.objects.update(message_data=forged)
    Message.objects.all().delete()
    assert len(stored_files(files)) == 1


def test_max_message_size_refuses_bigger_mail_at_queue_time(files, settings):
    settings.MAILER_MAX_MESSAGE_SIZE = 1 * MiB
    big_email(os.urandom(700 * 1024)).send()  # about 0.93 MiB encoded
    with pytest.raises(MessageTooLarge, match=r"is [\d,]+ bytes once encoded, more than MAILER_MAX_MESSAGE_SIZE"):
        big_email(os.urandom(800 * 1024)).send()
    assert Message.objects.count() == 1
    assert len(stored_files(files)) == 1  # the refused message's file was deleted


def test_max_message_size_without_storage(settings):
    settings.MAILER_MAX_MESSAGE_SIZE = 100 * 1024
    with pytest.raises(MessageTooLarge, match="MAILER_MAX_MESSAGE_SIZE"):
        big_email(os.urandom(100 * 1024)).send()
    assert not Message.objects.exists()


def test_without_storage_mariadb_refuses_at_queue_time_naming_the_setting(packet_limit):
    with pytest.raises(MessageTooLarge, match=r"max_allowed_packet.*Set MAILER_STORAGE to an alias of STORAGES"):
        big_email(os.urandom(20 * MiB)).send()
    assert not Message.objects.exists()


def test_with_storage_too_low_a_threshold_is_named(files, settings, packet_limit):
    settings.MAILER_STORAGE_THRESHOLD = 20 * MiB
    with pytest.raises(MessageTooLarge, match="Lower MAILER_STORAGE_THRESHOLD"):
        big_email(os.urandom(20 * MiB)).send()
    assert stored_files(files) == []


@pytest.mark.django_db(transaction=False)
@pytest.mark.parametrize(
    ("name", "value", "check"),
    [
        ("MAILER_STORAGE", "nowhere", "mailer.E013"),
        ("MAILER_STORAGE_THRESHOLD", "256k", "mailer.E014"),
        ("MAILER_STORAGE_THRESHOLD", -1, "mailer.E014"),
        ("MAILER_MAX_MESSAGE_SIZE", 1.5, "mailer.E014"),
    ],
)
def test_checks(settings, name, value, check):
    assert check not in {message.id for message in run_checks()}
    setattr(settings, name, value)
    assert check in {message.id for message in run_checks()}


def test_deleting_in_the_admin_deletes_the_files(files, admin_client):
    from django.urls import reverse

    for subject in ("one", "two", "three"):
        big_email(os.urandom(300 * 1024), subject=subject).send()
    first, second, third = Message.objects.order_by("pk")
    response = admin_client.post(reverse("admin:mailer_message_delete", args=[first.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert len(stored_files(files)) == 2
    action = {"action": "delete_selected", "_selected_action": [second.pk, third.pk], "post": "yes"}
    response = admin_client.post(reverse("admin:mailer_message_changelist"), action)
    assert response.status_code == 302
    assert not Message.objects.exists()
    assert stored_files(files) == []


def test_a_sender_holds_one_stored_attachment_at_a_time(files, settings):
    """Rows that refer to files are small, so a claim reads many at once: their files are read one at a time,
    when each message's turn comes, and let go once it is dealt with."""
    settings.MAILER_EMAIL_BACKEND = f"{backends.HERE}.StoredContentBackend"
    backends.STORED_ALIVE.clear()
    for i in range(4):
        big_email(os.urandom(300 * 1024), subject=f"m{i}").send()
    assert send_all().sent == 4
    assert backends.STORED_ALIVE == [1, 1, 1, 1]


def test_max_message_size_applies_to_make_message(settings):
    settings.MAILER_MAX_MESSAGE_SIZE = 100 * 1024
    with pytest.raises(MessageTooLarge, match="MAILER_MAX_MESSAGE_SIZE"):
        make_message(
            "S", "B", "f@example.org", ["to@example.org"], attachments=[("d.bin", os.urandom(100 * 1024), None)]
        )


def test_the_text_of_a_message_never_names_a_file_to_delete(files, settings):
    """A subject or body is any string, a reference's included: only names made by queueing count."""
    (files / "victim.txt").write_bytes(b"a user's upload")
    forged = f"{storage.TOKEN_PREFIX}mail\nvictim.txt"
    email = big_email(os.urandom(300 * 1024), subject="forged")
    email.body = forged
    email.attach("forged.txt", forged, "text/plain")
    email.send()
    Message.objects.all().delete()
    assert stored_files(files) == [files / "victim.txt"]
