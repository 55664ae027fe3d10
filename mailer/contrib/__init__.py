"""Optional apps that work with django-mailer: each is added to ``INSTALLED_APPS`` on its own."""
