"""Issue 16: emails that cannot be pickled as they are, and emails whose class is gone when they are sent.

A djoser-style class keeps the request it was rendered for: queued without it, with one warning naming
it (or refused with MAILER_DROP_UNPICKLABLE_ATTRIBUTES = False), and sent with all its content. A row
whose class the sender cannot import is sent as Django's plain class, and its log entry says so.
"""

import base64
import pickle
import sys
import threading
import urllib.request
import warnings

import pytest
from django.core import mail
from django.core.mail import EmailMessage, EmailMultiAlternatives

from mailer import engine, serialization
from mailer.backend import DbBackend
from mailer.engine import QueueNotDecodable
from mailer.models import RESULT_DONT_SEND, RESULT_SUCCESS, Message, MessageLog
from mailer.unpicklable import UnpicklableAttributesWarning
from tests.support.djoser_style import ActivationEmail
from tests.support.queueing import block

pytestmark = pytest.mark.django_db


def anymail_attributes():
    return {
        "tags": ["signup"],
        "metadata": {"user_id": 7},
        "merge_data": {"ann@example.com": {"name": "Ann"}},
        "merge_global_data": {"site": "example"},
        "merge_metadata": {"ann@example.com": {"n": 1}},
        "merge_headers": {"ann@example.com": {"X-N": "1"}},
        "esp_extra": {"sandbox": True},
        "template_id": "welcome",
        "track_clicks": True,
        "track_opens": False,
        "envelope_sender": "bounces@example.com",
    }


@pytest.mark.django_db(transaction=True)
def test_a_view_sends_a_djoser_style_email_it_is_queued_without_the_request_and_arrives_whole(live_server):
    """A real request, through Django's live server: its WSGI input is the socket, which cannot be pickled."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with urllib.request.urlopen(f"{live_server.url}/activate/?to=ann@example.com") as response:
            assert response.read() == b"1"
    [warning] = [w for w in caught if w.category is UnpicklableAttributesWarning]
    assert str(warning.message).startswith(
        "tests.support.djoser_style.ActivationEmail queued without its attribute(s) request, which cannot be pickled"
    )
    assert warning.filename.endswith("djoser_style.py")  # the line that sent it, in the project's code
    site = live_server.url.removeprefix("http://")

    [queued] = Message.objects.all()
    assert type(queued.email) is ActivationEmail
    assert "request" not in vars(queued.email) and queued.email.context == {"user_name": "Ann", "token": "t0k3n"}

    engine.send_all()
    [sent] = mail.outbox
    assert sent.subject == f"Activate your account on {site}"
    assert sent.body == f"Hello Ann, follow http://{site}/activate/t0k3n"
    assert sent.alternatives[0][1] == "text/html" and "activate</a>" in sent.alternatives[0][0]
    assert (sent.to, sent.from_email) == (["ann@example.com"], "accounts@example.com")
    assert sent.extra_headers["X-Sent-From"] == "activation view"
    assert MessageLog.objects.get().result == RESULT_SUCCESS


@pytest.mark.django_db(transaction=True)
def test_the_djoser_style_email_from_a_view_reaches_a_real_relay(live_server, smtp_settings):
    with pytest.warns(UnpicklableAttributesWarning, match=r"attribute\(s\) request,"):
        with urllib.request.urlopen(f"{live_server.url}/activate/?to=ann@example.com") as response:
            assert response.read() == b"1"
    assert engine.send_all().sent == 1
    [received] = smtp_settings.wait_for(1)
    site = live_server.url.removeprefix("http://")
    assert received.message["Subject"] == f"Activate your account on {site}"
    assert received.message["X-Sent-From"] == "activation view" and received.rcpt_tos == ["ann@example.com"]
    text, html = (part.get_content() for part in received.message.iter_parts())
    assert text.strip() == f"Hello Ann, follow http://{site}/activate/t0k3n"
    assert "activate</a>" in html


def test_everything_that_belongs_to_the_email_is_queued_and_only_what_cannot_be_pickled_is_dropped(settings):
    settings.MAILER_EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    email = EmailMultiAlternatives(
        "Subject",
        "Body",
        "from@example.com",
        ["ann@example.com"],
        bcc=["bcc@example.com"],
        cc=["cc@example.com"],
        reply_to=["reply@example.com"],
        headers={"X-Test": "1"},
        alternatives=[("<p>Body</p>", "text/html")],
        attachments=[("a.bin", bytes(range(256)), "application/octet-stream")],
    )
    vars(email).update(anymail_attributes())
    email.lock = threading.Lock()
    email.on_sent = lambda: None
    email.note = "kept: it pickles"

    with pytest.warns(UnpicklableAttributesWarning) as caught:
        email.send()
    [warning] = caught.list
    assert "lock, on_sent" in str(warning.message) and warning.filename == __file__

    stored = Message.objects.get().email
    assert type(stored) is EmailMultiAlternatives and "lock" not in vars(stored) and "on_sent" not in vars(stored)
    for name, value in {**anymail_attributes(), "note": "kept: it pickles"}.items():
        assert getattr(stored, name) == value, name
    engine.send_all()
    [sent] = mail.outbox
    for name in ("subject", "body", "from_email", "to", "cc", "bcc", "reply_to", "alternatives", "attachments"):
        assert getattr(sent, name) == getattr(email, name), name
    assert sent.extra_headers["X-Test"] == "1"
    assert email.lock is not None  # the caller's email is left as it was


def test_send_at_is_still_taken_out_and_scheduled():
    import datetime

    from django.utils import timezone

    when = timezone.now() + datetime.timedelta(hours=1)
    email = ActivationEmail(context={}, subject="s", body="b", to=["ann@example.com"])
    email.request = threading.Lock()
    email.send_at = when
    with pytest.warns(UnpicklableAttributesWarning, match="request"):
        EmailMessage.send(email)
    queued = Message.objects.get()
    assert queued.not_before == when and "send_at" not in vars(queued.email)


def test_with_the_setting_off_an_unpicklable_email_is_refused_at_queue_time_and_nothing_is_queued(settings):
    settings.MAILER_DROP_UNPICKLABLE_ATTRIBUTES = False
    backend = DbBackend()  # not get_connection(), which Django 6.1 deprecates (a warning, an error below)
    good = EmailMessage("good", "b", "from@example.com", ["ann@example.com"])
    bad = ActivationEmail(threading.Lock(), subject="bad", body="b", to=["ann@example.com"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match="request.*MAILER_DROP_UNPICKLABLE_ATTRIBUTES is False"):
            backend.send_messages([good, bad])
    assert Message.objects.count() == 0


def test_content_that_cannot_be_pickled_is_never_dropped():
    email = EmailMessage("s", "b", "from@example.com", ["ann@example.com"])
    email.metadata = {"lock": threading.Lock()}
    with pytest.raises(TypeError, match="its metadata cannot be pickled"):
        email.send()
    assert Message.objects.count() == 0


def test_a_class_pickle_cannot_name_is_queued_as_djangos_class():
    class Local(EmailMultiAlternatives):
        pass

    email = Local("s", "b", "from@example.com", ["ann@example.com"], alternatives=[("<p>b</p>", "text/html")])
    with pytest.warns(UnpicklableAttributesWarning, match="as a plain EmailMultiAlternatives"):
        email.send()
    stored = Message.objects.get().email
    assert type(stored) is EmailMultiAlternatives and stored.alternatives == email.alternatives


def test_an_email_the_dont_send_list_leaves_without_recipients_is_logged_without_the_attribute():
    block("ann@example.com")
    email = ActivationEmail(threading.Lock(), subject="s", body="b", to=["ann@example.com"])
    with pytest.warns(UnpicklableAttributesWarning, match="request"):
        EmailMessage.send(email)
    assert Message.objects.count() == 0
    log = MessageLog.objects.get()
    assert log.result == RESULT_DONT_SEND and log.email.subject == "s" and "request" not in vars(log.email)


def test_a_picklable_email_is_stored_as_before_without_a_warning():
    email = ActivationEmail(context={"n": 1}, subject="s", body="b", to=["ann@example.com"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = serialization.dumps(email)
    payload = data[len(serialization.PREFIX) :].rpartition(":")[0]
    assert base64.b64decode(payload) == pickle.dumps(email, protocol=pickle.HIGHEST_PROTOCOL)


# --- A class the sender cannot import --------------------------------------------------------------------------

GONE_MODULE = '''
from django.core.mail import EmailMessage, EmailMultiAlternatives


class Helper:
    """Held by an attribute: gone with the module."""


class GoneMessage(EmailMessage):
    pass


class GoneAlternatives(EmailMultiAlternatives):
    pass
'''


@pytest.fixture(params=["module removed", "classes renamed"])
def gone_module(request, tmp_path, monkeypatch):
    """A module ``gone_mail`` to queue with; calling the fixture's result removes it, or renames its classes."""
    (tmp_path / "gone_mail.py").write_text(GONE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import gone_mail

    def remove():
        if request.param == "module removed":
            sys.modules.pop("gone_mail")
            sys.path.remove(str(tmp_path))
            (tmp_path / "gone_mail.py").unlink()
        else:
            for name in ("Helper", "GoneMessage", "GoneAlternatives"):
                setattr(gone_mail, f"Renamed{name}", getattr(gone_mail, name))
                delattr(gone_mail, name)

    yield gone_mail, remove
    sys.modules.pop("gone_mail", None)


def test_an_email_whose_class_is_gone_is_sent_as_djangos_class_and_the_log_says_so(settings, gone_module, caplog):
    gone_mail, remove = gone_module
    plain = gone_mail.GoneMessage("plain", "text", "from@example.com", ["ann@example.com"], cc=["cc@example.com"])
    plain.tags = ["kept"]
    plain.helper = gone_mail.Helper()  # not content: left out with the class
    rich = gone_mail.GoneAlternatives("rich", "text", "from@example.com", ["bob@example.com"])
    rich.attach_alternative("<p>text</p>", "text/html")
    rich.attach("a.txt", "attached", "text/plain")
    plain.send()
    rich.send()
    remove()

    result = engine.send_all()
    assert (result.sent, result.held) == (2, 0)
    sent = {m.subject: m for m in mail.outbox}
    assert type(sent["plain"]) is EmailMessage and type(sent["rich"]) is EmailMultiAlternatives
    assert sent["plain"].cc == ["cc@example.com"] and sent["plain"].tags == ["kept"]
    assert not hasattr(sent["plain"], "helper")
    assert sent["rich"].alternatives[0][0] == "<p>text</p>" and sent["rich"].attachments[0][1] == "attached"
    logs = {log.email.subject: log.log_message for log in MessageLog.objects.all()}
    assert logs["plain"].startswith(
        "sent as a plain django.core.mail.EmailMessage: its class gone_mail.GoneMessage cannot be imported here"
    )
    assert "left out: helper" in logs["plain"]
    assert "django.core.mail.EmailMultiAlternatives: its class gone_mail.GoneAlternatives" in logs["rich"]
    assert "gone_mail.GoneMessage cannot be imported here" in caplog.text


def test_content_of_a_class_that_is_gone_too_holds_the_message_back(gone_module):
    gone_mail, remove = gone_module
    email = gone_mail.GoneMessage("s", "b", "from@example.com", ["ann@example.com"])
    email.metadata = {"helper": gone_mail.Helper()}
    email.send()
    remove()

    with pytest.raises(serialization.MissingClass, match="gone_mail"):
        serialization.loads(Message.objects.get().message_data)
    with pytest.raises(QueueNotDecodable):  # held back: nothing this pass claimed could be sent
        engine.send_all()
    assert mail.outbox == [] and Message.objects.count() == 1
