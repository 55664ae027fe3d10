"""A message's admin page shows the whole email (queue and log), its HTML part inert, its attachments downloadable;
the log is read only; the lists put what support needs first; the send action says what went wrong.

Through the test client, on the suite's database; the HTML part in a real browser is in test_admin_browser.py.
"""

import datetime
import re
import types
from email.message import MIMEPart
from email.mime.image import MIMEImage

import django
import pytest
from django.contrib.admin import site
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from django.urls import reverse
from django.utils import translation
from django.utils.html import escape

import mailer
from mailer.engine import send_all
from mailer.models import RESULT_DONT_SEND, RESULT_FAILURE, RESULT_SUCCESS, Message, MessageLog
from mailer.routing import mailers_configured
from tests.support.pickles import legacy_2x
from tests.support.ports import free_port
from tests.support.queueing import block
from tests.support.relays import ScriptedRelay, send_through

pytestmark = pytest.mark.django_db

HTML = '<p class="greeting">Hello <b>Ann</b></p>'
PDF = b"%PDF-1.4 not really a pdf \x00\xff" * 10  # 280 bytes


def url(name, *args):
    return reverse(f"admin:mailer_{name}", args=args)


def whole_email(subject="Your invoice"):
    email = EmailMultiAlternatives(
        subject,
        "Hello Ann,\nyour invoice is attached.",
        "Shop <shop@example.com>",
        ["ann@example.com"],
        cc=["boss@example.com"],
        bcc=["archive@example.com"],
        reply_to=["support@example.com"],
        headers={"X-Campaign": "autumn", "List-Unsubscribe": "<mailto:unsub@example.com>"},
    )
    email.attach_alternative(HTML, "text/html")
    email.attach("invoice.pdf", PDF, "application/pdf")
    email.attach("notes.txt", "ünïcode notes", "text/plain")
    return email


@pytest.fixture
def queued():
    whole_email().send()
    return Message.objects.get()


@pytest.fixture
def logged(queued):
    assert send_all().sent == 1
    return MessageLog.objects.get()


def page_of(client, obj):
    name = "message_change" if isinstance(obj, Message) else "messagelog_change"
    response = client.get(url(name, obj.pk))
    assert response.status_code == 200
    return response.content.decode()


def field(page, name):
    """The HTML of the read-only field ``name`` on a change page."""
    found = re.search(rf'<div class="form-row[^"]*field-{name}\b.*?<div class="readonly">(.*?)</div>', page, re.S)
    assert found, f"no field {name}"
    return found.group(1)


def user_with(*codenames):
    user = User.objects.create_user("support", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="mailer", codename__in=codenames))
    return user


# --- 1. The whole email ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["queued", "logged"])
def test_the_page_shows_the_whole_email(admin_client, kind, request):
    obj = request.getfixturevalue(kind)
    page = page_of(admin_client, obj)
    assert field(page, "from_address") == "Shop &lt;shop@example.com&gt;"
    assert field(page, "to") == "ann@example.com"
    assert field(page, "cc") == "boss@example.com"
    assert field(page, "bcc") == "archive@example.com"
    assert field(page, "reply_to") == "support@example.com"
    assert field(page, "subject") == "Your invoice"
    headers = field(page, "headers")
    assert "<th>X-Campaign</th><td>autumn</td>" in headers
    assert "<th>List-Unsubscribe</th><td>&lt;mailto:unsub@example.com&gt;</td>" in headers
    assert "<th>Message-ID</th>" in headers
    assert field(page, "plain_text_body") == "Hello Ann,<br>your invoice is attached."
    assert HTML not in page  # the HTML part is only in the frame, served by its own view

    [iframe] = re.findall(r"<iframe[^>]*>", field(page, "html_body"))
    assert re.search(r"\bsandbox\b", iframe) and 'sandbox="' not in iframe  # no allowance at all
    assert "allow-" not in iframe
    name = "message" if kind == "queued" else "messagelog"
    assert f'src="{url(f"{name}_html", obj.pk)}"' in iframe

    attachments = field(page, "attachment_list")
    assert re.findall(r'<li><a href="([^"]+)" download>([^<]+)</a> \(([^,]+), ([^)]+)\)</li>', attachments) == [
        (url(f"{name}_attachment", obj.pk, 0), "invoice.pdf", "application/pdf", "280\xa0bytes"),
        (url(f"{name}_attachment", obj.pk, 1), "notes.txt", "text/plain", "15\xa0bytes"),
    ]


@pytest.mark.parametrize("kind", ["queued", "logged"])
def test_the_html_part_is_served_inert(admin_client, kind, request):
    obj = request.getfixturevalue(kind)
    name = "message" if kind == "queued" else "messagelog"
    response = admin_client.get(url(f"{name}_html", obj.pk))
    assert response.status_code == 200
    assert response.content.decode() == HTML
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "SAMEORIGIN"  # the admin's page may frame it, nothing else
    policy = dict(
        (directive.split() + [""])[:2] if " " in directive else (directive, "")
        for directive in (part.strip() for part in response["Content-Security-Policy"].split(";"))
    )
    assert policy["default-src"] == "'none'"
    assert policy["style-src"] == "'unsafe-inline'"
    assert policy["form-action"] == "'none'"
    assert policy["frame-ancestors"] == "'self'"
    assert "sandbox" in policy  # inert when opened on its own too
    for directive in ("script-src", "img-src", "connect-src", "font-src", "frame-src", "media-src", "object-src"):
        assert directive not in policy  # falls back to default-src 'none'


@pytest.mark.parametrize("kind", ["queued", "logged"])
def test_attachments_download(admin_client, kind, request):
    obj = request.getfixturevalue(kind)
    name = "message" if kind == "queued" else "messagelog"
    response = admin_client.get(url(f"{name}_attachment", obj.pk, 0))
    assert response.status_code == 200
    assert response.content == PDF
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="invoice.pdf"'
    assert response["X-Content-Type-Options"] == "nosniff"
    text = admin_client.get(url(f"{name}_attachment", obj.pk, 1))
    assert text.content == "ünïcode notes".encode()
    assert admin_client.get(url(f"{name}_attachment", obj.pk, 2)).status_code == 404


def test_views_need_the_view_permission_of_that_model(client, logged):
    whole_email("queued").send()
    queued = Message.objects.latest("pk")
    client.force_login(user_with("view_messagelog"))
    assert client.get(url("messagelog_attachment", logged.pk, 0)).content == PDF
    assert client.get(url("messagelog_html", logged.pk)).status_code == 200
    assert client.get(url("message_attachment", queued.pk, 0)).status_code == 403
    assert client.get(url("message_html", queued.pk)).status_code == 403

    client.logout()  # not logged in: the admin's login page, nothing of the message
    response = client.get(url("messagelog_attachment", logged.pk, 0))
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert client.get(url("messagelog_html", logged.pk)).status_code == 302


def test_a_message_without_html_or_data_has_no_frame(admin_client, settings):
    mailer.send_mail("plain", "just text", "from@example.com", ["to@example.com"])
    queued = Message.objects.get()
    page = page_of(admin_client, queued)
    assert "<iframe" not in page
    for name in "cc", "bcc", "reply_to", "html_body", "attachment_list", "expiry":
        assert field(page, name) == "-"  # the admin's empty value, not "None"
    assert admin_client.get(url("message_html", queued.pk)).status_code == 404
    assert admin_client.get(url("message_attachment", queued.pk, 0)).status_code == 404

    settings.MAILER_EMAIL_LOG_MESSAGE_DATA = False
    send_all()
    log = MessageLog.objects.get()
    page = page_of(admin_client, log)
    assert "<iframe" not in page
    assert admin_client.get(url("messagelog_html", log.pk)).status_code == 404


def test_an_html_body_is_the_html_part(admin_client):
    email = EmailMultiAlternatives("html only", HTML, "from@example.com", ["to@example.com"])
    email.content_subtype = "html"
    email.send()
    queued = Message.objects.get()
    page = page_of(admin_client, queued)
    assert HTML not in page and "<iframe" in page
    assert admin_client.get(url("message_html", queued.pk)).content.decode() == HTML


@pytest.mark.django_db(transaction=True)  # stored files are deleted once the deletion commits
def test_attachments_kept_in_mailer_storage(admin_client, settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "mail": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}},
    }
    settings.MAILER_STORAGE = "mail"
    settings.MAILER_STORAGE_THRESHOLD = 100
    whole_email().send()
    queued = Message.objects.get()
    assert (
        PDF not in queued.message_data.encode() and len([p for p in tmp_path.rglob("*") if p.is_file()]) == 1
    )  # the PDF, not the notes
    for obj, name in [(queued, "message"), (None, "messagelog")]:
        if obj is None:
            assert send_all().sent == 1
            obj = MessageLog.objects.get()
        assert "invoice.pdf</a> (application/pdf, 280\xa0bytes)" in page_of(admin_client, obj)
        response = admin_client.get(url(f"{name}_attachment", obj.pk, 0))
        assert response.content == PDF
        assert response["Content-Disposition"] == 'attachment; filename="invoice.pdf"'
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:
        path.unlink()  # gone from the storage: the page still opens, the download is a 404 saying why
    assert "invoice.pdf" in page_of(admin_client, obj)
    response = admin_client.get(url("messagelog_attachment", obj.pk, 0))
    assert response.status_code == 404


# --- 2. Titles -----------------------------------------------------------------------------------------
# The admin names a message by its readable title wherever Django's admin would show str(), which keeps
# 2.3.2's form ("On <when_added>, ..."; test_models.py).

WHEN = datetime.datetime(2026, 11, 30, 16, 34, 40, 30792, tzinfo=datetime.UTC)
WHEN_TEXT = "Nov. 30, 2026, 4:34 p.m."  # the tests' time zone is UTC


def title_of(obj):
    return site._registry[type(obj)].object_title(obj)


def old_name(obj):
    """The start of str(obj), 2.3.2's form, as a page would show it: never in the admin's pages."""
    return f"On {obj.when_added if isinstance(obj, Message) else obj.when_attempted}"


def test_titles_name_the_subject_recipients_and_local_time(settings):
    email = whole_email()
    email.cc.append("cat@example.com")
    message = Message.objects.create(when_added=WHEN)
    message.email = email
    message.save()
    assert title_of(message) == f"“Your invoice” to ann@example.com, boss@example.com and 2 more, {WHEN_TEXT}"
    assert str(message) == f'On {WHEN}, "Your invoice" to ann@example.com'
    settings.TIME_ZONE = "Europe/Paris"
    assert (
        title_of(message) == "“Your invoice” to ann@example.com, boss@example.com and 2 more, Nov. 30, 2026, 5:34 p.m."
    )
    message.email = EmailMultiAlternatives("", "body", "from@example.com", [])
    assert title_of(message) == "“(no subject)”, Nov. 30, 2026, 5:34 p.m."


def test_titles_of_rows_without_an_email(settings):
    assert title_of(Message(message_data="not an email", when_added=WHEN)) == (
        f"Message that cannot be decoded, {WHEN_TEXT}"
    )
    log = MessageLog(message_data=None, message_id="<m@example.org>", when_attempted=WHEN)
    assert title_of(log) == f"<m@example.org>, {WHEN_TEXT}"  # MAILER_EMAIL_LOG_MESSAGE_DATA = False
    log.message_id = None
    assert title_of(log) == f"Message without data, {WHEN_TEXT}"


@pytest.mark.parametrize("kind", ["queued", "logged"])
def test_the_page_its_title_and_breadcrumbs_name_the_message_by_its_title(admin_client, kind, request):
    obj = request.getfixturevalue(kind)
    page = page_of(admin_client, obj)
    title = escape(title_of(obj))
    assert title.startswith("“Your invoice” to ann@example.com, boss@example.com and 1 more, ")
    assert not re.search(r"\d\d:\d\d:\d\d|\+00:00", title)  # no seconds, microseconds or offset
    assert re.search(r"<title>(.*?)</title>", page, re.S).group(1).startswith(f"{title} | ")
    assert f"<h2>{title}</h2>" in page  # the subtitle
    assert re.search(r'class="breadcrumbs">.*?' + re.escape(title), page, re.S)
    assert old_name(obj) not in page


def test_the_history_page_names_the_message_by_its_title(admin_client, queued):
    page = admin_client.get(url("message_history", queued.pk)).content.decode()
    title = escape(title_of(queued))
    assert f"Change history: {title}" in page
    assert re.search(r'class="breadcrumbs">.*?' + re.escape(title), page, re.S)
    assert old_name(queued) not in page
    with translation.override("ru"):  # Django's words, the title in Russian
        page = admin_client.get(url("message_history", queued.pk)).content.decode()
        assert f"История изменений: {escape(title_of(queued))}" in page


@pytest.mark.parametrize("kind", ["queued", "logged"])
def test_deleting_names_the_message_by_its_title(admin_client, kind, request):
    obj = request.getfixturevalue(kind)
    name = "message" if kind == "queued" else "messagelog"
    title = title_of(obj)
    page = admin_client.get(url(f"{name}_delete", obj.pk)).content.decode()
    assert re.search(r'class="breadcrumbs">.*?' + re.escape(escape(title)), page, re.S)
    question = f'Are you sure you want to delete the {obj._meta.verbose_name} ["“]{re.escape(escape(title))}["”]\\?'
    assert re.search(question, page)  # its quotes: "" up to Django 5.2, “” from 6.0
    assert f'<a href="{url(f"{name}_change", obj.pk)}">{escape(title)}</a></li>' in page  # the list of objects
    assert old_name(obj) not in page

    response = admin_client.post(url(f"{name}_delete", obj.pk), {"post": "yes"}, follow=True)
    assert [str(m) for m in response.context["messages"]] == [
        f"The {obj._meta.verbose_name} “{title}” was deleted successfully."
    ]
    assert not type(obj).objects.exists()
    assert LogEntry.objects.get().object_repr == title  # the admin's own log ("Recent actions")


def test_the_delete_action_names_the_messages_by_their_titles(admin_client, queued):
    mailer.send_mail("Second", "body", "from@example.com", ["bob@example.com"])
    messages = list(Message.objects.order_by("pk"))
    data = {"action": "delete_selected", "_selected_action": [m.pk for m in messages]}
    page = admin_client.post(url("message_changelist"), data).content.decode()
    for message in messages:
        assert f'<a href="{url("message_change", message.pk)}">{escape(title_of(message))}</a>' in page
        assert old_name(message) not in page
    admin_client.post(url("message_changelist"), {**data, "post": "yes"})
    assert not Message.objects.exists()
    assert sorted(LogEntry.objects.values_list("object_repr", flat=True)) == sorted(map(title_of, messages))


def test_changing_the_priority_names_the_message_by_its_title(admin_client, queued):
    response = admin_client.post(url("message_change", queued.pk), {"priority": "1", "_save": "Save"}, follow=True)
    title = title_of(queued)
    [note] = [str(m) for m in response.context["messages"]]
    link = f'<a href="{url("message_change", queued.pk)}">{escape(title)}</a>'
    assert note == f"The message “{link}” was changed successfully."
    assert LogEntry.objects.get().object_repr == title
    queued.refresh_from_db()
    assert queued.priority == 1


@pytest.mark.skipif(django.VERSION < (5, 0), reason="the checkboxes' labels: Django 5.0+")
def test_a_list_rows_checkbox_is_labelled_by_its_title(admin_client, queued):
    page = admin_client.get(url("message_changelist")).content.decode()
    assert f'aria-label="Select this object for an action - {escape(title_of(queued))}"' in page
    assert old_name(queued) not in page


# --- 3. The log is read only ---------------------------------------------------------------------------


def test_log_entries_cannot_be_changed_even_by_a_superuser(admin_client, logged):
    page = page_of(admin_client, logged)
    assert 'name="_save"' not in page and 'name="_continue"' not in page
    response = admin_client.post(url("messagelog_change", logged.pk), {"result": RESULT_FAILURE, "_save": "Save"})
    assert response.status_code == 403
    logged.refresh_from_db()
    assert logged.result == RESULT_SUCCESS


# --- 4. The lists ---------------------------------------------------------------------------------------


def columns(page):
    return re.findall(r'<th scope="col"\s+class="[^"]*column-(\w+)', page)


def test_the_log_list_starts_with_when_result_recipient_subject(admin_client, logged, settings):
    whole_email().send()  # a queue to list
    if mailers_configured():
        del settings.MAILERS  # the alias column and filter only show with MAILERS
    page = admin_client.get(url("messagelog_changelist")).content.decode()
    assert columns(page)[:4] == ["when_attempted", "result", "to", "subject"]
    assert "column-mailer" not in page
    assert "?mailer__" not in page and "By mailer" not in page
    assert "field-mailer" not in page_of(admin_client, logged)
    full = logged.message_id
    assert len(full) > 40 and full not in re.sub(r'title="[^"]*"', "", page)  # shortened in the list
    page = admin_client.get(url("message_changelist")).content.decode()
    assert "column-when_added" in page
    assert "column-mailer" not in page and "By mailer" not in page


@pytest.mark.skipif(not mailers_configured(), reason="MAILERS: Django 6.1+")
def test_the_alias_column_shows_with_mailers(admin_client, logged):
    whole_email().send()  # a queue to list
    for name in "messagelog_changelist", "message_changelist":
        page = admin_client.get(url(name)).content.decode()
        assert "column-mailer" in page and "By mailer" in page
    assert "field-mailer" in page_of(admin_client, logged)


# --- 5. Don't-send entries ----------------------------------------------------------------------------


def test_a_message_blocked_when_queued_records_who_was_blocked(admin_client):
    block("ann@example.com")
    block("bob@example.com")
    mailer.send_mail("Hello", "body", "from@example.com", ["ann@example.com", "Bob <BOB@example.com>"])
    assert not Message.objects.exists()
    log = MessageLog.objects.get()
    assert log.result == RESULT_DONT_SEND
    assert log.email.to == ["ann@example.com", "Bob <BOB@example.com>"]
    assert "ann@example.com, Bob <BOB@example.com>" in log.log_message
    assert title_of(log).startswith("“Hello” to ann@example.com, Bob <BOB@example.com>, ")
    assert "ann@example.com" in field(page_of(admin_client, log), "to")


def test_a_message_blocked_when_sent_records_who_was_blocked(admin_client):
    mailer.send_mail("Hello", "body", "from@example.com", ["ann@example.com"])
    email = EmailMultiAlternatives("Hi", "body", "from@example.com", ["cat@example.com"], bcc=["dan@example.com"])
    email.send()
    block("ann@example.com")
    block("cat@example.com")
    block("dan@example.com")
    assert send_all().skipped == 2
    first, second = MessageLog.objects.order_by("pk")
    assert (first.result, second.result) == (RESULT_DONT_SEND, RESULT_DONT_SEND)
    assert first.log_message == "no recipient left: ann@example.com on the don't-send list"
    assert second.log_message == "no recipient left: cat@example.com, dan@example.com on the don't-send list"
    assert (second.email.to, second.email.bcc) == (["cat@example.com"], ["dan@example.com"])
    for log in first, second:
        assert not re.search(r"\bto\s*,|\bto$", title_of(log))  # no dangling "to"
    assert title_of(second).startswith("“Hi” to cat@example.com, dan@example.com, ")


def test_a_message_partly_blocked_is_sent_to_the_others_only():
    mailer.send_mail("Hello", "body", "from@example.com", ["ann@example.com", "bob@example.com"])
    block("ann@example.com")
    assert send_all().sent == 1
    log = MessageLog.objects.get()
    assert (log.result, log.email.to) == (RESULT_SUCCESS, ["bob@example.com"])


# --- 6. The send action's report ------------------------------------------------------------------------


def messages_of(response):
    return [(message.level_tag, str(message)) for message in response.context["messages"]]


def send_action(client, ids):
    data = {"action": "send_messages", "_selected_action": [str(pk) for pk in ids], "index": 0}
    return client.post(url("message_changelist"), data, follow=True)


def test_the_send_action_warns_when_the_relay_is_down(admin_client, settings):
    send_through(settings, types.SimpleNamespace(host="127.0.0.1", port=free_port()), alias="down")
    mailer.send_mail("Hello", "body", "from@example.com", ["ann@example.com"])
    [(level, text)] = messages_of(send_action(admin_client, Message.objects.values_list("pk", flat=True)))
    assert level == "warning", text
    assert text.startswith("0 messages sent, 1 deferred, 0 failed. First error: "), text
    assert "Connection refused" in text, text


def test_the_send_action_warns_of_failures_with_the_relay_reply(admin_client, settings):
    with ScriptedRelay(refuse={"gone@example.com": "550 5.1.1 No such user"}) as relay:
        send_through(settings, relay, alias="relay")
        mailer.send_mail("Hello", "body", "from@example.com", ["gone@example.com"])
        mailer.send_mail("Hello", "body", "from@example.com", ["ann@example.com"])
        response = send_action(admin_client, Message.objects.values_list("pk", flat=True))
    [(level, text)] = messages_of(response)
    assert level == "warning"
    assert text.startswith("1 message sent, 0 deferred, 1 failed. First error: ")
    assert "550 5.1.1 No such user" in text


def test_the_send_action_reports_success_in_green(admin_client):
    mailer.send_mail("Hello", "body", "from@example.com", ["ann@example.com"])
    assert messages_of(send_action(admin_client, Message.objects.values_list("pk", flat=True))) == [
        ("success", "1 message sent.")
    ]


# --- Translations ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "expected"),
    [("ru", "«Your invoice» для ann@example.com, boss@example.com и ещё 1, "), ("ja", "「Your invoice」")],
)
def test_titles_are_translated(logged, language, expected):
    with translation.override(language):
        assert title_of(logged).startswith(expected)


# --- Emails of every shape ---------------------------------------------------------------------------------


def test_a_django_mailer_2x_row_shows_its_html_and_attachments(admin_client):
    # 2.x pickled the email as it was: alternatives and attachments as plain tuples (before Django 5.2's named ones).
    email = whole_email("from 2.x")
    email.__dict__["alternatives"] = [(HTML, "text/html")]
    email.__dict__["attachments"] = [("invoice.pdf", PDF, "application/pdf")]
    message = Message.objects.create(message_data=legacy_2x(email))
    page = page_of(admin_client, message)
    assert "<iframe" in page and "invoice.pdf</a> (application/pdf, 280\xa0bytes)" in page
    assert admin_client.get(url("message_html", message.pk)).content.decode() == HTML
    assert admin_client.get(url("message_attachment", message.pk, 0)).content == PDF


def test_mime_part_attachments_and_odd_names_and_types(admin_client):
    email = whole_email("odd")
    if django.VERSION >= (6, 0):  # Django 6's MIME parts; MIMEBase ones are deprecated there
        image = MIMEPart()
        image.set_content(b"GIF89a not really", "image", "gif", disposition="attachment", filename="pixel.gif")
    else:
        image = MIMEImage(b"GIF89a not really", "gif")
        image.add_header("Content-Disposition", "attachment", filename="pixel.gif")
    email.attach(image)
    email.attach('<b>"quoted"</b>\r\nname.txt', "text", "text/plain\r\nX-Injected: 1")
    email.attachments.append((None, b"\x00\x01", None))  # as a hand-built email may hold it
    email.extra_headers["X-Markup"] = "<script>alert(1)</script>"
    email.send()
    message = Message.objects.get()
    page = page_of(admin_client, message)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>&quot;quoted&quot;" not in page and "&lt;b&gt;" in page
    assert "pixel.gif</a> (image/gif, 17\xa0bytes)" in page
    assert "attachment 5</a> (application/octet-stream, 2\xa0bytes)" in page

    image_response = admin_client.get(url("message_attachment", message.pk, 2))
    assert (image_response.content, image_response["Content-Type"]) == (b"GIF89a not really", "image/gif")
    odd = admin_client.get(url("message_attachment", message.pk, 3))
    assert odd["Content-Type"] == "application/octet-stream"  # not a bare type: never a header of its own
    assert "X-Injected" not in odd and "\n" not in odd["Content-Disposition"]
    assert odd["Content-Disposition"].startswith("attachment; filename")
    unnamed = admin_client.get(url("message_attachment", message.pk, 4))
    assert unnamed["Content-Disposition"] == 'attachment; filename="attachment-5"'


def test_an_undecodable_row_still_has_a_page(admin_client):
    message = Message.objects.create(message_data="not an email")
    page = page_of(admin_client, message)
    assert "Message that cannot be decoded, " in re.search(r"<title>(.*?)</title>", page, re.S).group(1)
    assert admin_client.get(url("message_html", message.pk)).status_code == 404
    assert admin_client.get(url("message_attachment", message.pk, 0)).status_code == 404


@pytest.mark.skipif(django.VERSION < (6, 0), reason="MIMEPart attachments: Django 6.0+")
def test_a_mime_part_attachment_is_queued_sent_and_shown(admin_client):
    # Queueing used to index the part as a (name, content, type) tuple: AttributeError.
    part = MIMEPart()
    part.set_content(b"GIF89a not really", "image", "gif", disposition="attachment", filename="pixel.gif")
    email = whole_email("with a part")
    email.attach(part)
    email.send()
    assert send_all().sent == 1
    [sent] = mail.outbox
    assert [a.get_filename() for a in sent.attachments if hasattr(a, "get_filename")] == ["pixel.gif"]
    log = MessageLog.objects.get()
    assert "pixel.gif</a> (image/gif, 17\xa0bytes)" in page_of(admin_client, log)


def test_the_send_action_counts_messages_the_dont_send_list_stopped(admin_client):
    mailer.send_mail("Hello", "body", "from@example.com", ["ann@example.com"])
    mailer.send_mail("Hello", "body", "from@example.com", ["bob@example.com"])
    block("bob@example.com")
    assert messages_of(send_action(admin_client, Message.objects.values_list("pk", flat=True))) == [
        ("success", "1 message sent."),
        ("info", "1 message not sent: every recipient is on the don't-send list."),
    ]
