"""The system checks of ``mailer.contrib.anymail``: django-anymail is there, and the soft bounce limit is valid."""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured


@checks.register()
def check_anymail(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from mailer.bounces import soft_bounce_limit

    errors = []
    if find_spec("anymail") is None:
        errors.append(
            checks.Error(
                "mailer.contrib.anymail is in INSTALLED_APPS, but django-anymail is not installed: no ESP event "
                "reaches the don't-send list.",
                hint="pip install django-anymail (and add its webhook URLs to your project), or remove "
                "mailer.contrib.anymail from INSTALLED_APPS.",
                id="mailer.E015",
            )
        )
    try:
        soft_bounce_limit()
    except ImproperlyConfigured as exc:
        errors.append(
            checks.Error(
                str(exc),
                hint="For example (3, 7): the third soft bounce within 7 days adds the address. None (the "
                "default): soft bounces add nothing.",
                id="mailer.E016",
            )
        )
    return errors
