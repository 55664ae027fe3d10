"""The Japanese and Russian translations ship compiled with the package."""

import pytest
from django.utils import translation

import mailer
from mailer.models import Message


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
