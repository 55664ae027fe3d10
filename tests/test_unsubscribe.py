"""One-click unsubscribe (RFC 8058): the headers as a real relay receives them, and the link's view.

The link of a message delivered to an aiosmtpd relay, POSTed as a mailbox provider does (no cookie, CSRF checks
on), puts its recipient on the don't-send list, and mail queued to them afterwards is not delivered. A token
forged, altered, expired or made for another address gets 400 and adds nothing; GET only asks to confirm.
Run on Django 5.2 and 6.1: Django 6 writes headers with Python's modern email policy, which would turn a long
link into RFC 2047 encoded words.
"""

import datetime
import email
import re
import types
from urllib.parse import urlsplit

import django
import pytest
from django.core import checks, signing
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.test import Client
from django.urls import clear_script_prefix, set_script_prefix

import mailer
from mailer.engine import send_all
from mailer.models import RESULT_DONT_SEND, DontSendEntry, Message, MessageLog
from mailer.unsubscribe import (
    ONE_CLICK,
    SALT,
    ListUnsubscribeValue,
    add_unsubscribe_headers,
    check_unsubscribe,
    make_token,
    unsubscribe_headers,
    unsubscribe_url,
)

pytestmark = pytest.mark.django_db

SENDER = "news@example.com"
FORM = "application/x-www-form-urlencoded"
MAILTO = "unsubscribe@example.com"
LINK = re.compile(r"<(https://[^<>]+)>")


@pytest.fixture
def provider():
    """What a mailbox provider's one-click POST comes from: a client without cookies, CSRF checks on."""
    return Client(enforce_csrf_checks=True)


def entries() -> list[tuple[str, str | None]]:
    return list(DontSendEntry.objects.order_by("pk").values_list("to_address", "reason"))


def header_block(data: bytes, name: str) -> bytes:
    """The raw lines of header ``name`` (its first line and its continuation lines) in a message's bytes."""
    head = data.split(b"\r\n\r\n", 1)[0]
    line = rb"[^\r\n]*"
    pattern = rb"^" + re.escape(name.encode()) + rb":" + line + rb"(?:\r\n[ \t]" + line + rb")*"
    match = re.search(pattern, head, re.MULTILINE | re.IGNORECASE)
    assert match, f"no {name} header in {head!r}"
    return match.group(0)


def unfolded(data: bytes, name: str) -> str:
    """The value of header ``name`` as a mail client reads it: unfolded (RFC 5322), no encoded words decoded."""
    value = email.message_from_bytes(data, policy=email.policy.compat32)[name]
    return re.sub(r"\r?\n(?=[ \t])", "", value).strip()


def deliver(relay, message: EmailMessage) -> bytes:
    """Queue ``message``, send the queue to the relay, and return the bytes it received."""
    count = len(relay.transactions)
    message.send()
    send_all()
    relay.wait_for(count + 1)
    return relay.transactions[count].data


def path_of(url: str) -> str:
    return urlsplit(url).path


def one_click(client: Client, url: str):
    return client.post(path_of(url), data=ONE_CLICK, content_type=FORM)


# --- The headers, as the relay receives them -------------------------------------------------------------


def test_the_one_click_post_from_a_delivered_header_unsubscribes_and_later_mail_is_not_delivered(relay, provider):
    message = add_unsubscribe_headers(EmailMessage("News", "Hello", SENDER, ["Ann <Ann@Example.org>"]))
    data = deliver(relay, message)

    value = unfolded(data, "List-Unsubscribe")
    assert value == message.extra_headers["List-Unsubscribe"]
    assert b"=?" not in header_block(data, "List-Unsubscribe")
    assert unfolded(data, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    (url,) = LINK.fullmatch(value).groups()
    assert url.startswith("https://testserver/mailer/unsubscribe/")
    assert f"<{url}>".encode() in data  # on one line, cut nowhere

    response = one_click(provider, url)
    assert response.status_code == 200
    assert entries() == [("ann@example.org", "unsubscribed")]

    assert mailer.send_mail("Next", "Hello again", SENDER, ["ANN@example.org"]) == 1
    send_all()
    assert len(relay.transactions) == 1
    assert MessageLog.objects.filter(result=RESULT_DONT_SEND).count() == 1


def test_a_long_link_and_a_mailto_stay_whole_on_their_lines(relay, settings):
    settings.MAILER_UNSUBSCRIBE_MAILTO = MAILTO
    address = "a.very.long.local.part.of.an.address." * 4 + "x@subscribers.example.org"
    message = add_unsubscribe_headers(EmailMessage("News", "Hello", SENDER, [address]))
    data = deliver(relay, message)

    expected = message.extra_headers["List-Unsubscribe"]
    url = LINK.match(expected).group(1)
    assert expected == f"<{url}>, <mailto:{MAILTO}?subject=unsubscribe>"
    assert len(url) > 200
    assert unfolded(data, "List-Unsubscribe") == expected
    block = header_block(data, "List-Unsubscribe")
    assert b"=?" not in block
    assert f"<{url}>,\r\n".encode() in block
    if django.VERSION >= (6, 0):  # its email policy writes the value with ListUnsubscribeValue.fold()
        assert block.split(b"\r\n") == [
            f"List-Unsubscribe: <{url}>,".encode(),
            f" <mailto:{MAILTO}?subject=unsubscribe>".encode(),
        ]


def test_a_value_of_ones_own_is_written_as_given_and_short_links_share_a_line(relay):
    value = ListUnsubscribeValue("<https://x.io/u/1/>, <mailto:u@x.io>")
    message = EmailMessage("News", "Hello", SENDER, ["a@b.io"], headers={"List-Unsubscribe": value})
    data = deliver(relay, message)
    assert header_block(data, "List-Unsubscribe") == b"List-Unsubscribe: <https://x.io/u/1/>, <mailto:u@x.io>"
    for bad in ("<https://x.io/u/1/>\r\nBcc: eve@x.io", "<https://x.io/ü/>"):
        with pytest.raises(ValueError):
            ListUnsubscribeValue(bad)


def test_send_mail_takes_the_headers(relay, provider):
    address = "bo@example.org"
    assert mailer.send_mail("News", "Hello", SENDER, [address], headers=unsubscribe_headers(address)) == 1
    send_all()
    relay.wait_for(1)
    data = relay.transactions[0].data
    assert unfolded(data, "List-Unsubscribe-Post") == ONE_CLICK
    (url,) = LINK.fullmatch(unfolded(data, "List-Unsubscribe")).groups()
    assert one_click(provider, url).status_code == 200
    assert entries() == [("bo@example.org", "unsubscribed")]


def test_a_queued_message_keeps_the_headers_it_was_given():
    headers = {"X-Campaign": "autumn"}
    messages = [EmailMessage("News", "Hello", SENDER, [to], headers=headers) for to in ("a@x.org", "b@x.org")]
    for message in messages:
        add_unsubscribe_headers(message)
    assert headers == {"X-Campaign": "autumn"}  # the dict the messages shared is left alone
    mailer_links = [m.extra_headers["List-Unsubscribe"] for m in messages]
    assert mailer_links[0] != mailer_links[1]
    for message in messages:
        message.send()
    stored = [m.email.extra_headers for m in Message.objects.order_by("pk")]
    assert [h["List-Unsubscribe"] for h in stored] == mailer_links
    assert all(h["X-Campaign"] == "autumn" and h["List-Unsubscribe-Post"] == ONE_CLICK for h in stored)


def test_headers_are_replaced_in_any_case_and_the_recipient_must_be_named_among_several():
    message = EmailMessage("News", "Hello", SENDER, ["a@x.org"], headers={"list-unsubscribe": "<mailto:old@x.org>"})
    add_unsubscribe_headers(message)
    assert sorted(message.extra_headers) == ["List-Unsubscribe", "List-Unsubscribe-Post"]

    several = EmailMessage("News", "Hello", SENDER, ["a@x.org"], bcc=["b@x.org"])
    with pytest.raises(ValueError, match="2 recipients"):
        add_unsubscribe_headers(several)
    with pytest.raises(ValueError, match="not a recipient"):
        add_unsubscribe_headers(several, "c@x.org")
    add_unsubscribe_headers(several, "B@X.org")
    assert path_of(LINK.match(several.extra_headers["List-Unsubscribe"]).group(1)).endswith(
        f"/{make_token('b@x.org')}/"
    )


# --- The view --------------------------------------------------------------------------------------------


def test_get_shows_a_page_that_posts_and_adds_nothing():
    client = Client(enforce_csrf_checks=True)
    url = unsubscribe_url("Cy@Example.org")
    response = client.get(path_of(url))
    assert response.status_code == 200
    page = response.content.decode()
    assert "cy@example.org" in page
    assert '<form method="post">' in page
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page
    assert "no-cache" in response["Cache-Control"]
    assert client.head(path_of(url)).status_code == 200
    assert entries() == []

    response = client.post(path_of(url), {"List-Unsubscribe": "One-Click"})  # the page's form, multipart
    assert response.status_code == 200
    assert "No more email will be sent to cy@example.org." in response.content.decode()
    assert entries() == [("cy@example.org", "unsubscribed")]


def test_once_whatever_the_case(provider):
    DontSendEntry.objects.create(to_address="DEE@EXAMPLE.ORG")
    for address in ("dee@example.org", "Dee <Dee@Example.ORG>"):
        assert one_click(provider, unsubscribe_url(address)).status_code == 200
    for address in ("Eve@Example.org", "eve@example.org", "EVE@EXAMPLE.ORG"):
        assert one_click(provider, unsubscribe_url(address)).status_code == 200
    assert entries() == [("dee@example.org", None), ("eve@example.org", "unsubscribed")]


def test_a_post_without_the_one_click_field_adds_nothing(provider):
    url = unsubscribe_url("fay@example.org")
    assert provider.post(path_of(url), data="", content_type=FORM).status_code == 400
    assert provider.post(path_of(url), data="List-Unsubscribe=Yes", content_type=FORM).status_code == 400
    assert provider.put(path_of(url), data=ONE_CLICK, content_type=FORM).status_code == 405
    assert entries() == []


def _altered(token: str) -> str:
    """The token with one character of its signature changed."""
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


def _other_address(token: str) -> str:
    """Ann's token with Bob's address put in its place (Bob's payload, Ann's timestamp and signature)."""
    _, stamp, signature = token.split(":")
    return ":".join([make_token("bob@example.org").split(":")[0], stamp, signature])


BAD_TOKENS = {
    "forged with another key": lambda token: signing.dumps("ann@example.org", salt=SALT, key="not the site's key"),
    "signed for another purpose": lambda token: signing.dumps("ann@example.org"),
    "altered signature": _altered,
    "another address": _other_address,
    "no timestamp": lambda token: signing.Signer(salt=SALT).sign_object("ann@example.org"),
    "not a token": lambda token: "ann@example.org",
}


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_a_bad_token_is_refused_and_adds_nothing(provider, kind):
    token = BAD_TOKENS[kind](make_token("ann@example.org"))
    path = f"/mailer/unsubscribe/{token}/"
    response = provider.get(path)
    assert response.status_code == 400
    assert "This link is not valid" in response.content.decode()
    assert one_click(provider, f"https://testserver{path}").status_code == 400
    assert entries() == []


def test_a_token_older_than_the_max_age_is_refused(provider, settings, monkeypatch):
    sixty_one_days_ago = int(datetime.datetime.now().timestamp()) - 61 * 24 * 60 * 60
    monkeypatch.setattr(signing.TimestampSigner, "timestamp", lambda self: signing.b62_encode(sixty_one_days_ago))
    url = unsubscribe_url("gus@example.org")
    monkeypatch.undo()

    response = one_click(provider, url)
    assert response.status_code == 400
    assert "This link has expired" in response.content.decode()
    assert entries() == []

    settings.MAILER_UNSUBSCRIBE_MAX_AGE = datetime.timedelta(days=62)
    assert one_click(provider, url).status_code == 200
    assert entries() == [("gus@example.org", "unsubscribed")]


def test_links_never_expire_with_no_max_age(provider, settings, monkeypatch):
    settings.MAILER_UNSUBSCRIBE_MAX_AGE = None
    monkeypatch.setattr(signing.TimestampSigner, "timestamp", lambda self: signing.b62_encode(1))
    url = unsubscribe_url("hal@example.org")
    monkeypatch.undo()
    assert one_click(provider, url).status_code == 200


# --- Settings and checks ---------------------------------------------------------------------------------


def urls_without_mailer() -> types.ModuleType:
    """A URLconf (a module, as ROOT_URLCONF may be) that routes nothing."""
    module = types.ModuleType("urls_without_mailer")
    module.urlpatterns = []
    return module


def test_the_link_is_the_same_under_a_script_prefix(settings):
    settings.MAILER_UNSUBSCRIBE_BASE_URL = "https://example.com/site/"
    url = unsubscribe_url("ivy@example.org")
    assert url.startswith("https://example.com/site/mailer/unsubscribe/")
    set_script_prefix("/site/")
    try:
        assert unsubscribe_url("ivy@example.org") == url
    finally:
        clear_script_prefix()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MAILER_UNSUBSCRIBE_BASE_URL", None, "is not set"),
        ("MAILER_UNSUBSCRIBE_BASE_URL", "http://example.com", "https"),
        ("MAILER_UNSUBSCRIBE_BASE_URL", "example.com", "https"),
        ("MAILER_UNSUBSCRIBE_MAILTO", "Unsubscribe <u@example.com>", "plain ASCII address"),
        ("MAILER_UNSUBSCRIBE_MAX_AGE", "60", "number of seconds"),
        ("MAILER_UNSUBSCRIBE_MAX_AGE", 0, "number of seconds"),
    ],
)
def test_a_bad_setting_is_an_error_when_links_are_made_and_in_the_checks(settings, name, value, message):
    setattr(settings, name, value)
    with pytest.raises(ImproperlyConfigured, match=message):
        unsubscribe_headers("jo@example.org")
    errors = check_unsubscribe()
    expected = "mailer.E018" if name == "MAILER_UNSUBSCRIBE_BASE_URL" else "mailer.E019"
    assert [(type(e), e.id) for e in errors] == [(checks.Error, expected)]
    assert message in errors[0].msg


def test_the_checks_pass_with_the_test_settings_and_without_the_feature(settings):
    assert check_unsubscribe() == []
    settings.MAILER_UNSUBSCRIBE_BASE_URL = None
    settings.ROOT_URLCONF = urls_without_mailer()
    assert check_unsubscribe() == []
    del settings.ROOT_URLCONF  # settings that route nothing at all
    assert check_unsubscribe() == []


def test_settings_without_the_view_routed_are_an_error(settings):
    settings.ROOT_URLCONF = urls_without_mailer()
    assert [e.id for e in check_unsubscribe()] == ["mailer.E018"]
    with pytest.raises(ImproperlyConfigured, match="include"):
        unsubscribe_url("kim@example.org")
