"""The name the admin gives a queued message or a log entry: its readable title (:mod:`mailer.titles`).

``str()`` of a :class:`~mailer.models.Message` or :class:`~mailer.models.MessageLog` keeps django-mailer
2.x's form (``On 2026-11-30 16:34:40.030792+00:00, "subject" to ...``): projects' code and tests read it.
Django's admin names an object by ``str()`` wherever it shows one; :class:`TitlesMixin` gives it the title
there instead: the page's title and subtitle, the breadcrumbs, the delete confirmation and its "deleted"
note, the "changed" note, the history page, a list row's checkbox label and the admin's own log
(``LogEntry.object_repr``, the index page's "Recent actions").

Where Django reads the name from the object itself (templates, ``LogEntry``), it is given a
:class:`Titled` stand-in: the same object, named by its title.
"""

from __future__ import annotations

from typing import Any

import django
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import capfirst
from django.utils.translation import gettext

from mailer import titles

# Django's own message (django.contrib.admin's catalog translates it): not one of mailer's.
HISTORY_TITLE = "Change history: %s"


class Titled:
    """``obj`` as the admin's templates and log read it: every attribute is ``obj``'s, ``str()`` its title."""

    __slots__ = ("_obj", "_title")

    def __init__(self, obj: Any, title: str) -> None:
        self._obj = obj
        self._title = title

    def __getattr__(self, name: str) -> Any:
        if name in Titled.__slots__:  # not set yet (a copy being made): not obj's either
            raise AttributeError(name)
        return getattr(self._obj, name)

    def __str__(self) -> str:
        return self._title


class TitlesMixin:
    """For the ``ModelAdmin`` of a model with ``email`` and ``message_data``: objects named by their titles."""

    title_time = "when_added"  # the field of the time a title names

    def object_title(self, obj: Any) -> str:
        """The readable title of ``obj``: what the admin calls it."""
        return titles.title(
            obj.email,
            getattr(obj, self.title_time),
            has_data=bool(obj.message_data),
            message_id=getattr(obj, "message_id", None),
        )

    def titled(self, obj: Any) -> Titled:
        return Titled(obj, self.object_title(obj))

    # Pages.

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict,
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        if obj is not None:  # the subtitle is also the page's <title>; "original" names it in the breadcrumbs
            titled = self.titled(obj)
            context.update(subtitle=str(titled), original=titled)
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def render_delete_form(self, request: HttpRequest, context: dict) -> HttpResponse:
        # "object" names it in the breadcrumbs and, up to Django 5.2, the question; "escaped_object" from 6.0.
        titled = self.titled(context["object"])
        context.update(object=titled, escaped_object=str(titled))
        return super().render_delete_form(request, context)

    def history_view(self, request: HttpRequest, object_id: str, extra_context: dict | None = None) -> HttpResponse:
        response = super().history_view(request, object_id, extra_context)
        context = getattr(response, "context_data", None) or {}  # a redirect when there is no such object
        if context.get("object") is not None:
            titled = self.titled(context["object"])
            context["object"] = titled
            if "title" not in (extra_context or {}):
                context["title"] = gettext(HISTORY_TITLE) % titled
        return response

    # Models whose rows are bookkeeping of the objects (a log entry's search rows): deleted with them, not listed.
    hidden_related: tuple = ()

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple:
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        for model in self.hidden_related:
            counts.pop(model._meta.verbose_name_plural, None)
        if set(counts) <= {self.model._meta.verbose_name_plural}:
            deleted = [self._deleted_item(obj) for obj in objs]  # nothing but the objects themselves
        return deleted, counts, perms_needed, protected

    def _deleted_item(self, obj: Any) -> str:
        opts = self.model._meta
        change = reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change", args=[quote(obj.pk)])
        return format_html('{}: <a href="{}">{}</a>', capfirst(opts.verbose_name), change, self.object_title(obj))

    def action_checkbox(self, obj: Any) -> str:
        return super().action_checkbox(self.titled(obj))  # its label names the row (Django 5.0+)

    action_checkbox.__dict__.update(vars(admin.ModelAdmin.action_checkbox))  # the column's header (Django 4.2)

    # Notes.

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        request._mailer_deleted_title = self.object_title(obj)  # for response_delete, which gets str(obj)
        super().delete_model(request, obj)

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        return super().response_delete(request, getattr(request, "_mailer_deleted_title", obj_display), obj_id)

    def response_change(self, request: HttpRequest, obj: Any) -> HttpResponse:
        return super().response_change(request, self.titled(obj))

    # The admin's log.

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return super().log_change(request, self.titled(obj), message)

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:  # Django 5.1+
        return super().log_deletions(request, [self.titled(obj) for obj in queryset])

    if django.VERSION < (5, 1):  # defined on 5.x, it would be called instead of log_deletions(), with a warning

        def log_deletion(self, request: HttpRequest, obj: Any, object_repr: str) -> Any:
            return super().log_deletion(request, obj, self.object_title(obj))
