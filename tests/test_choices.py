"""mailer.choices: priority and result as Django enumerations, defined once; the 2.x constants derived from them."""

import enum
import io
import logging

import pytest
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.db import models as django_models
from django.utils import translation

import mailer
from mailer import choices, enqueue, models
from mailer.choices import Priority, Result


def test_priority_enumeration():
    assert issubclass(Priority, django_models.IntegerChoices)
    assert [(p.name, p.value) for p in Priority] == [("HIGH", 1), ("MEDIUM", 2), ("LOW", 3), ("DEFERRED", 4)]
    assert [p.word for p in Priority] == ["high", "medium", "low", "deferred"]


def test_result_enumeration():
    assert issubclass(Result, django_models.TextChoices)
    assert [(r.name, r.value) for r in Result] == [("SUCCESS", "1"), ("DONT_SEND", "2"), ("FAILURE", "3")]
    assert [r.word for r in Result] == ["success", "don't send", "failure"]


def test_labels_are_translated_words_stay_english():
    with translation.override("ru"):
        assert [str(p.label) for p in Priority] == ["высокий", "средний", "низкий", "отложенный"]
        assert [str(r.label) for r in Result] == ["успешно", "не отправлять", "сбой"]
        assert [p.word for p in Priority] == ["high", "medium", "low", "deferred"]
    with translation.override("ja"):
        assert [str(p.label) for p in Priority] == ["高", "中", "低", "保留"]
        assert [str(r.label) for r in Result] == ["成功", "送信しない", "失敗"]


def test_legacy_constants_are_plain_values_of_the_enumerations():
    # 2.x callers get exactly the types 2.3.2 had: ints, strs, a list and a tuple of plain pairs.
    for name, member in [
        ("PRIORITY_HIGH", Priority.HIGH),
        ("PRIORITY_MEDIUM", Priority.MEDIUM),
        ("PRIORITY_LOW", Priority.LOW),
        ("PRIORITY_DEFERRED", Priority.DEFERRED),
        ("RESULT_SUCCESS", Result.SUCCESS),
        ("RESULT_DONT_SEND", Result.DONT_SEND),
        ("RESULT_FAILURE", Result.FAILURE),
    ]:
        value = getattr(models, name)
        assert value == member
        assert type(value) in (int, str) and not isinstance(value, enum.Enum), name
    assert type(models.PRIORITIES) is list
    assert type(models.RESULT_CODES) is tuple
    for pairs in (models.PRIORITIES, models.RESULT_CODES):
        for value, label in pairs:
            assert type(value) in (int, str) and type(label) is str
    assert all(type(key) is str for key in models.PRIORITY_MAPPING)


def test_legacy_constants_stay_english_whatever_the_language():
    with translation.override("ru"):
        assert dict(models.PRIORITIES)[models.PRIORITY_HIGH] == "high"
        assert dict(models.RESULT_CODES)[models.RESULT_DONT_SEND] == "don't send"
        assert "high" in models.PRIORITY_MAPPING


def test_model_fields_use_the_enumerations():
    for model in (models.Message, models.MessageLog):
        assert [value for value, _label in model._meta.get_field("priority").choices] == Priority.values
    assert [value for value, _label in models.MessageLog._meta.get_field("result").choices] == Result.values
    with translation.override("ru"):
        assert models.Message(priority=Priority.LOW).get_priority_display() == "низкий"
        assert models.MessageLog(result=Result.FAILURE).get_result_display() == "сбой"


def test_get_priority_has_one_home():
    assert enqueue.get_priority is choices.get_priority
    assert mailer.get_priority(Priority.HIGH) == 1


@pytest.mark.parametrize("member", list(Priority))
def test_get_priority_stores_members_as_plain_ints(member):
    value = choices.get_priority(member)
    assert value == member.value and type(value) is int


@pytest.mark.django_db
def test_no_migration_is_missing(capsys):
    # The translated labels deconstruct as the English words of migration 0004: no AlterField.
    call_command("makemigrations", "mailer", "--check", "--dry-run")
    assert "No changes detected" in capsys.readouterr().out


@pytest.mark.django_db
def test_commands_print_the_english_words_whatever_the_language(caplog):
    # The admin translates; the commands' output (read by scripts and log searches) keeps the English words.
    message = models.Message.objects.create(priority=Priority.MEDIUM)
    message.email = EmailMessage("s", "b", "f@example.org", ["t@example.org"])
    for result in Result:
        models.MessageLog.objects.log(message, result)
    out = io.StringIO()
    with translation.override("ru"), caplog.at_level(logging.INFO):
        call_command("mailer_status", stdout=out)
        call_command("purge_mail_log", "0", "--result", "all")
    assert [line.split()[0] for line in out.getvalue().splitlines() if line.startswith("  ")][:7] == [
        "high",
        "medium",
        "low",
        "waiting",
        "scheduled",
        "deferred",
        "total",
    ]
    assert "\n  don't send        1          1\n" in out.getvalue()
    assert "(success 1, don't send 1, failure 1)" in caplog.text
