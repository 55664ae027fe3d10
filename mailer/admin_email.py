"""The whole email on a message's admin page (queue and log): addresses, headers, text, HTML, attachments.

What an email is made of is read by :mod:`mailer.emailparts`; this module shows it. Two views, added to
the model admin's URLs, serve what a page cannot hold inline, to staff who may view that model:

* ``<id>/html/``: the HTML part, shown in an ``<iframe sandbox>`` (no ``allow-scripts``, no
  ``allow-same-origin``, no ``allow-forms``) and served with a Content-Security-Policy that allows
  nothing but inline styles (:data:`HTML_POLICY`): no script runs, no image, font or style sheet is
  fetched (a remote image would tell the sender the message was read), no form is sent, also when the
  URL is opened on its own.
* ``<id>/attachment/<n>/``: attachment ``n``, as a download (``Content-Disposition: attachment``), read
  from ``MAILER_STORAGE`` when it is kept there.

Everything read from an email is escaped with :func:`~django.utils.html.escape` (see
:mod:`mailer.admin_columns` for why ``SafeString`` must be escaped too).
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat, linebreaksbr
from django.urls import URLPattern, path, reverse
from django.utils.html import escape, format_html, format_html_join
from django.utils.http import content_disposition_header
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from mailer import emailparts, storage

# The HTML part's policy: nothing is loaded or run, inline styles only. ``sandbox`` (no allowances) also
# applies when the URL is opened outside the page's iframe; frame-ancestors lets only the admin frame it.
HTML_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; base-uri 'none'; "
    "frame-ancestors 'self'; sandbox"
)
# A download is never rendered by the browser, but if it were: as a sandboxed, inert document.
ATTACHMENT_POLICY = "default-src 'none'; sandbox"

MIME_TYPE = re.compile(
    r"[\w!#$&^.+-]+/[\w!#$&^.+-]+", re.ASCII
)  # a bare type/subtype: anything else is served as bytes

# The fields of a message's page that show its email, in order (EmailPageMixin's methods).
EMAIL_FIELDS = [
    "from_address",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "subject",
    "headers",
    "plain_text_body",
    "html_body",
    "attachment_list",
]


def _joined(email: Any, field: str) -> str | None:
    found = emailparts.addresses(email, field) if email is not None else []
    return escape(", ".join(found)) if found else None


class EmailPageMixin:
    """For a ``ModelAdmin`` of a model with an ``email`` property: the email's fields and the two views.

    ``to`` and ``subject`` (in :data:`EMAIL_FIELDS`) are the list's columns (:mod:`mailer.admin_columns`).
    A field with nothing to show shows the admin's empty value ("-"): read-only fields show ``None`` as "None".
    """

    def _or_empty(self, value: str | None) -> str:
        return value if value is not None else self.get_empty_value_display()

    @admin.display(description=_("From"))
    def from_address(self, obj: Any) -> str:
        email = obj.email
        return self._or_empty(escape(email.from_email) if email is not None and email.from_email else None)

    @admin.display(description=_("Cc"))
    def cc(self, obj: Any) -> str:
        return self._or_empty(_joined(obj.email, "cc"))

    @admin.display(description=_("Bcc"))
    def bcc(self, obj: Any) -> str:
        return self._or_empty(_joined(obj.email, "bcc"))

    @admin.display(description=_("Reply-To"))
    def reply_to(self, obj: Any) -> str:
        return self._or_empty(_joined(obj.email, "reply_to"))

    @admin.display(description=_("Headers"))
    def headers(self, obj: Any) -> str:
        found = emailparts.headers(obj.email) if obj.email is not None else []
        if not found:
            return self.get_empty_value_display()
        rows = format_html_join(
            "", "<tr><th>{}</th><td>{}</td></tr>", ((escape(name), escape(value)) for name, value in found)
        )
        return format_html('<table class="mailer-headers">{}</table>', rows)

    @admin.display(description=_("Plain text body"))
    def plain_text_body(self, obj: Any) -> str | None:
        email = obj.email
        if email is None:
            return _("<Can't decode>")
        text = emailparts.text_part(email)
        # escape() first: the admin's own escaping and linebreaksbr both trust a SafeString.
        return linebreaksbr(escape(text)) if text is not None else self.get_empty_value_display()

    @admin.display(description=_("HTML part"))
    def html_body(self, obj: Any) -> str:
        """The HTML part in a sandboxed frame; its content comes from :meth:`html_view`, with its policy."""
        if obj.pk is None or obj.email is None or emailparts.html_part(obj.email) is None:
            return self.get_empty_value_display()
        return format_html(
            '<iframe class="mailer-html" sandbox src="{}" title="{}" referrerpolicy="no-referrer" '
            'style="width: 50em; max-width: 100%; height: 32em; border: 1px solid #ccc; background: #fff;">'
            "</iframe>",
            self._email_url(obj, "html"),
            gettext("HTML part"),
        )

    @admin.display(description=_("Attachments"))
    def attachment_list(self, obj: Any) -> str:
        found = emailparts.attachments(obj.email) if obj.pk is not None and obj.email is not None else []
        if not found:
            return self.get_empty_value_display()
        items = format_html_join(
            "",
            '<li><a href="{}" download>{}</a> ({}, {})</li>',
            (
                (
                    self._email_url(obj, "attachment", attachment.index),
                    escape(attachment.name or gettext("attachment %(number)d") % {"number": attachment.index + 1}),
                    escape(attachment.content_type),
                    filesizeformat(attachment.size) if attachment.size is not None else "?",
                )
                for attachment in found
            ),
        )
        return format_html('<ul class="mailer-attachments" style="margin: 0; padding: 0;">{}</ul>', items)

    # The views.

    def _email_url(self, obj: Any, view: str, *args: Any) -> str:
        opts = self.model._meta
        name = f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_{view}"
        return reverse(name, args=[obj.pk, *args])

    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta
        prefix = f"{opts.app_label}_{opts.model_name}"
        wrap = self.admin_site.admin_view  # staff only, never cached
        return [
            path("<path:object_id>/html/", wrap(self.html_view), name=f"{prefix}_html"),
            path("<path:object_id>/attachment/<int:index>/", wrap(self.attachment_view), name=f"{prefix}_attachment"),
            *super().get_urls(),  # last: its "<path:object_id>/" would take these URLs
        ]

    def viewable_email(self, request: HttpRequest, object_id: str) -> Any:
        """The decoded email of object ``object_id``, if the user may view it; else 404 or 403."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(gettext("No such message."))
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        email = obj.email
        if email is None:
            raise Http404(gettext("The message data is missing or can't be decoded."))
        return email

    def html_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The HTML part, inert: see :data:`HTML_POLICY`."""
        html = emailparts.html_part(self.viewable_email(request, object_id))
        if html is None:
            raise Http404(gettext("This message has no HTML part."))
        response = HttpResponse(html, content_type="text/html; charset=utf-8")
        response["Content-Security-Policy"] = HTML_POLICY
        response["X-Frame-Options"] = "SAMEORIGIN"  # the admin's own page frames it (middleware keeps this)
        return _private(response)

    def attachment_view(self, request: HttpRequest, object_id: str, index: int) -> HttpResponse:
        """Attachment ``index`` as a download."""
        try:
            found = emailparts.attachment_content(self.viewable_email(request, object_id), index)
        except storage.AttachmentUnavailable as exc:
            raise Http404(str(exc)) from exc
        if found is None:
            raise Http404(gettext("No such attachment."))
        attachment, content = found
        content_type = attachment.content_type if MIME_TYPE.fullmatch(attachment.content_type) else None
        response = HttpResponse(content, content_type=content_type or emailparts.OCTET_STREAM)
        # No line break in a header, whatever the name holds (Django 4.2 raises BadHeaderError for one).
        name = " ".join((attachment.name or "").split()) or f"attachment-{index + 1}"
        response["Content-Disposition"] = content_disposition_header(True, name)
        response["Content-Security-Policy"] = ATTACHMENT_POLICY
        return _private(response)


def _private(response: HttpResponse) -> HttpResponse:
    """Never sniffed into another type, never kept by a shared cache, sends no referrer."""
    response["X-Content-Type-Options"] = "nosniff"
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "private, no-store"
    return response
