"""Views a project may route to; none is routed unless the project does it (see ``docs/metrics.rst``)."""

from __future__ import annotations

import base64
import binascii
import hmac

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from mailer.conf import mailer_settings
from mailer.metrics import CONTENT_TYPE, prometheus_text

CHALLENGE = 'Bearer realm="django-mailer metrics"'


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus metrics of :func:`mailer.metrics.prometheus_text`, for a scrape or a staff member.

    Served to a request that carries one of the ``MAILER_METRICS_TOKENS`` (``Authorization: Bearer <token>``,
    or as the password of HTTP basic authentication: the two ways a Prometheus scrape job can send a
    secret), or to an active staff user logged in to the site. Anyone else is refused before the database
    is asked anything: 401 with a challenge, or 403 for a logged-in user who is not staff. GET and HEAD only.
    """
    if _token_accepted(request.headers.get("Authorization", "")) or _is_staff(request):
        return HttpResponse(prometheus_text(), content_type=CONTENT_TYPE)
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return HttpResponse("Staff only.\n", status=403, content_type="text/plain; charset=utf-8")
    response = HttpResponse("Authentication required.\n", status=401, content_type="text/plain; charset=utf-8")
    response["WWW-Authenticate"] = CHALLENGE
    return response


def metrics_tokens() -> list[str]:
    """The tokens of ``MAILER_METRICS_TOKENS`` (a string, or a list of strings while one replaces another);
    empty ones are left out, so that an empty setting lets no request in."""
    setting = mailer_settings.METRICS_TOKENS
    tokens = [setting] if isinstance(setting, str) else setting
    if not isinstance(tokens, (list, tuple)) or not all(isinstance(token, str) for token in tokens):
        raise ImproperlyConfigured(f"MAILER_METRICS_TOKENS must be a string or a list of strings, not {setting!r}")
    return [token for token in tokens if token]


def _token_accepted(header: str) -> bool:
    """Does the ``Authorization`` header carry one of the tokens? Compared in constant time."""
    scheme, _, credentials = header.strip().partition(" ")
    given = credentials.strip()
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(given, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    if not given:
        return False
    given_bytes = given.encode("utf-8")
    return any(hmac.compare_digest(given_bytes, token.encode("utf-8")) for token in metrics_tokens())


def _is_staff(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)  # None without django.contrib.auth's middleware
    return user is not None and user.is_active and user.is_staff
