"""The URLs of django-mailer's views for the people mail is sent to: ``path("mailer/", include("mailer.urls"))``.

Only the one-click unsubscribe link (see ``docs/unsubscribe.rst``); the metrics view is routed on its own.
"""

from django.urls import path

from mailer import views

app_name = "mailer"

urlpatterns = [
    path("unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
]
