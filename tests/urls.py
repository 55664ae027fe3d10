from importlib.util import find_spec

from django.contrib import admin
from django.urls import include, path

from mailer import views
from tests.support.djoser_style import activation_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("activate/", activation_view),
    path("mailer/metrics", views.metrics),
    path("mailer/", include("mailer.urls")),
]
if find_spec("anymail") is not None:  # an extra of the tests: django-anymail's webhooks, as a project has them
    urlpatterns.append(path("anymail/", include("anymail.urls")))
