"""The Japanese and Russian translations ship compiled with the package."""

import io
import re

import pytest
from django.contrib.admin import site
from django.contrib.admin.utils import flatten_fieldsets, label_for_field
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.utils import translation

import mailer
from mailer.models import (
    PRIORITY_DEFERRED,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_MEDIUM,
    RESULT_DONT_SEND,
    RESULT_FAILURE,
    RESULT_SUCCESS,
    DontSendEntry,
    Message,
    MessageLog,
    RelayState,
)


@pytest.mark.parametrize(
    ("language", "expected"),
    [("ja", "メッセージ"), ("ru", "сообщения")],
)
def test_model_names_are_translated(language, expected):
    with translation.override(language):
        assert str(Message._meta.verbose_name_plural) == expected


@pytest.mark.django_db
def test_admin_action_is_translated(admin_client):
    mailer.send_mail("subject", "body", "from@example.com", ["to@example.com"])  # actions show with rows only
    with translation.override("ru"):
        response = admin_client.get("/admin/mailer/message/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Отправить выбранные сообщения" in page
    assert "Назначить выбранным сообщениям высокий приоритет" in page
    assert "Очередь:" in page  # the counts above the list


PRIORITY_WORDS = {"ja": ["高", "中", "低", "保留"], "ru": ["высокий", "средний", "низкий", "отложенный"]}
RESULT_WORDS = {"ja": ["成功", "送信しない", "失敗"], "ru": ["успешно", "не отправлять", "сбой"]}


@pytest.mark.django_db
@pytest.mark.parametrize("language", ["ja", "ru"])
def test_admin_shows_priorities_translated(admin_client, language):
    for priority in PRIORITY_HIGH, PRIORITY_MEDIUM, PRIORITY_LOW, PRIORITY_DEFERRED:
        mailer.send_mail("subject", "body", "from@example.com", ["to@example.com"], priority=priority)
    Message.objects.filter(priority=PRIORITY_HIGH).update(priority=PRIORITY_DEFERRED)  # queueing refuses deferred
    Message.objects.filter(priority=PRIORITY_MEDIUM).update(priority=PRIORITY_HIGH)
    with translation.override(language):
        response = admin_client.get("/admin/mailer/message/")
    page = response.content.decode()
    for value, word in enumerate(PRIORITY_WORDS[language], start=1):
        assert f'<a href="?priority__exact={value}">{word}</a>' in page  # the filter
    for word in (PRIORITY_WORDS[language][0], PRIORITY_WORDS[language][2], PRIORITY_WORDS[language][3]):
        assert f'<td class="field-priority">{word}</td>' in page  # the column


@pytest.mark.django_db
@pytest.mark.parametrize("language", ["ja", "ru"])
def test_admin_shows_results_translated(admin_client, language):
    message = Message.objects.create(priority=PRIORITY_MEDIUM)
    message.email = EmailMessage("subject", "body", "from@example.com", ["to@example.com"])
    for result in RESULT_SUCCESS, RESULT_DONT_SEND, RESULT_FAILURE:
        MessageLog.objects.log(message, result)
    with translation.override(language):
        response = admin_client.get("/admin/mailer/messagelog/")
    page = response.content.decode()
    for value, word in enumerate(RESULT_WORDS[language], start=1):
        assert f'<a href="?result__exact={value}">{word}</a>' in page  # the filter
        assert f'<td class="field-result">{word}</td>' in page  # the column


@pytest.mark.parametrize("language", ["ja", "ru"])
@pytest.mark.parametrize("model", [Message, MessageLog, DontSendEntry, RelayState])
def test_every_admin_field_label_is_translated(language, model):
    # Column headers, filter titles and the change form's labels: none left in English.
    model_admin = site._registry[model]
    filters = [item for item in model_admin.list_filter if not isinstance(item, str)]  # filter classes
    fields = flatten_fieldsets(model_admin.fieldsets) if model_admin.fieldsets else model_admin.fields or []
    names = {*model_admin.list_display, *fields, *set(model_admin.list_filter) - set(filters)}
    with translation.override(language):
        labels = {name: str(label_for_field(name, model, model_admin)) for name in names}
        labels.update({item.__name__: str(item.title) for item in filters})
    # Names that stay as they are in Japanese and Russian mail clients too.
    english = {
        name: label for name, label in labels.items() if re.search("[A-Za-z]", re.sub("ID|HTML|Bcc|Cc", "", label))
    }
    assert english == {}


@pytest.mark.django_db(transaction=True)  # SQLite's schema editor refuses to start inside a transaction
def test_migration_of_the_field_labels_runs_no_sql():
    # Labels live in Python only: migration 0012 changes the migration state, never the tables.
    out = io.StringIO()
    call_command("sqlmigrate", "mailer", "0012", stdout=out)
    statements = [
        line
        for line in out.getvalue().splitlines()
        if line.strip() and not line.startswith("--") and line.strip().upper() not in ("BEGIN;", "COMMIT;")
    ]
    assert "Alter field when_attempted on messagelog" in out.getvalue()
    assert statements == []
