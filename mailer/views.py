"""Views a project may route to; none is routed unless the project does it.

:func:`metrics` (see ``docs/metrics.rst``) and :func:`unsubscribe`, through ``mailer.urls``
(see ``docs/unsubscribe.rst``).
"""

from __future__ import annotations

import base64
import binascii
import hmac

from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.timezone import now
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_safe

from mailer.choices import DontSendReason
from mailer.conf import mailer_settings
from mailer.metrics import CONTENT_TYPE, prometheus_text
from mailer.models import DontSendEntry
from mailer.unsubscribe import ONE_CLICK, address_from_token

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


ONE_CLICK_FIELD, _, ONE_CLICK_VALUE = ONE_CLICK.partition("=")
UNSUBSCRIBE_TEMPLATE = "mailer/unsubscribe.html"


@csrf_exempt  # RFC 8058: the one-click POST comes from the mailbox provider's servers, without a cookie
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """The link of ``List-Unsubscribe`` (see :mod:`mailer.unsubscribe`): puts its address on the don't-send list.

    GET shows a page that asks to confirm, and changes nothing: mail scanners and previews open links. A POST
    whose body holds ``List-Unsubscribe=One-Click`` (RFC 8058's one-click POST, and the page's button) adds
    the address, once, and answers 200 whether it was on the list already or not. A token altered, forged or
    expired gets 400 and adds nothing; so does a POST without that field. The token is the only credential:
    it was sent to the address it names.
    """
    try:
        address = address_from_token(token)
    except signing.SignatureExpired:
        return _unsubscribe_page(request, "expired", status=400)
    except signing.BadSignature:
        return _unsubscribe_page(request, "invalid", status=400)
    if request.method != "POST":
        return _unsubscribe_page(request, "confirm", address)
    if request.POST.get(ONE_CLICK_FIELD) != ONE_CLICK_VALUE:
        return _unsubscribe_page(request, "confirm", address, status=400)
    DontSendEntry.objects.add_once(
        address, reason=DontSendReason.UNSUBSCRIBED, event_at=now(), detail="List-Unsubscribe link (RFC 8058)"
    )
    return _unsubscribe_page(request, "done", address)


def _unsubscribe_page(request: HttpRequest, state: str, address: str = "", status: int = 200) -> HttpResponse:
    context = {"state": state, "address": address, "field": ONE_CLICK_FIELD, "value": ONE_CLICK_VALUE}
    response = render(request, UNSUBSCRIBE_TEMPLATE, context, status=status)
    response["X-Robots-Tag"] = "noindex"
    return response
