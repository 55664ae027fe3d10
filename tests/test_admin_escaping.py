"""Markup taken from an email never reaches an admin page unescaped (issue 12, item 6).

``render_to_string()`` returns a ``SafeString``, and plain-text email templates turn autoescaping
off, so text a user typed sits raw in a "safe" subject or body. These tests queue such mail the way
a project does, send it into the log, and read every admin page that shows it, through the real
admin views, as a staff user who may only view.
"""

import pytest
from django.contrib.auth.models import Permission, User
from django.core.mail import EmailMessage
from django.template import engines
from django.urls import reverse
from django.utils.safestring import SafeData, SafeString

import mailer
from mailer.engine import send_all
from mailer.models import Message, MessageLog
from tests.support.pickles import legacy_2x

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'
NAME = f"{SCRIPT}{IMG}"
RAW = ["<script>alert(1)", "<img src=x onerror"]  # what must never appear in a page
ESCAPED = ["&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;"]

# A plain-text email template as projects write them (Django's password reset one does the same).
SUBJECT_TEMPLATE = "{% autoescape off %}Welcome {{ name }}{% endautoescape %}"
BODY_TEMPLATE = "{% autoescape off %}Hello {{ name }},\nyour account is ready.{% endautoescape %}"


def render(source: str) -> SafeString:
    text = engines["django"].from_string(source).render({"name": NAME})
    assert isinstance(text, SafeData)  # what render_to_string() gives
    return text


def legacy_2x_row(subject: SafeString, body: SafeString) -> Message:
    """A row as django-mailer 2.x queued it: a base64 pickle, with the SafeString (SafeText) kept."""
    email = EmailMessage(subject, body, "from@example.org", ["legacy@example.org"])
    return Message.objects.create(message_data=legacy_2x(email))


@pytest.fixture
def viewer(client):
    """A staff user with the view permissions of the app and nothing else."""
    user = User.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="mailer", codename__startswith="view_"))
    client.force_login(user)
    return client


@pytest.fixture
def tainted():
    """Two queued messages (through mailer.send_mail and through the DbBackend), one 2.x row, and a log entry."""
    subject, body = render(SUBJECT_TEMPLATE), render(BODY_TEMPLATE)
    mailer.send_mail(subject, body, "from@example.org", ["sent@example.org"])
    assert Message.objects.count() == 1
    send_all()
    log = MessageLog.objects.get()
    assert isinstance(log.email.subject, SafeData) and isinstance(log.email.body, SafeData)

    mailer.send_mail(subject, body, "from@example.org", ["queued@example.org"])
    EmailMessage(subject, body, "from@example.org", ["backend@example.org"]).send()
    legacy = legacy_2x_row(subject, body)
    assert isinstance(legacy.email.subject, SafeData)  # 2.x rows keep the class: the decoder allows it
    queued = list(Message.objects.order_by("pk"))
    assert len(queued) == 3 and all(isinstance(m.email.subject, SafeData) for m in queued)
    return queued, log


def assert_escaped(page: str, *, body: bool = True) -> None:
    for raw in RAW:
        assert raw not in page
    assert f"Welcome {ESCAPED[0]}{ESCAPED[1]}" in page
    if body:
        assert f"Hello {ESCAPED[0]}{ESCAPED[1]},<br>your account is ready." in page  # line breaks kept


def get(client, name: str, *args, **query) -> str:
    response = client.get(reverse(f"admin:mailer_{name}", args=args), query)
    assert response.status_code == 200, name
    return response.content.decode()


def test_view_only_staff_see_the_queue_escaped(viewer, tainted):
    queued, _log = tainted
    assert_escaped(get(viewer, "message_changelist"), body=False)
    for message in queued:
        assert_escaped(get(viewer, "message_change", message.pk))
        assert_escaped(get(viewer, "message_history", message.pk), body=False)


def test_view_only_staff_see_the_log_escaped(viewer, tainted):
    _queued, log = tainted
    assert_escaped(get(viewer, "messagelog_changelist"), body=False)
    assert_escaped(get(viewer, "messagelog_changelist", q=log.message_id), body=False)
    assert_escaped(get(viewer, "messagelog_change", log.pk))
    assert_escaped(get(viewer, "messagelog_history", log.pk), body=False)


def test_delete_confirmations_are_escaped(admin_client, tainted):
    queued, log = tainted
    for message in queued:
        assert_escaped(get(admin_client, "message_delete", message.pk), body=False)
    assert_escaped(get(admin_client, "messagelog_delete", log.pk), body=False)
    for name, pks in (("message", [m.pk for m in queued]), ("messagelog", [log.pk])):
        response = admin_client.post(
            reverse(f"admin:mailer_{name}_changelist"), {"action": "delete_selected", "_selected_action": pks}
        )
        assert response.status_code == 200
        assert_escaped(response.content.decode(), body=False)
