from django.contrib import admin
from django.urls import path

from mailer import views
from tests.support.djoser_style import activation_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("activate/", activation_view),
    path("mailer/metrics", views.metrics),
]
