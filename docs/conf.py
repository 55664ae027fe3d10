# Sphinx configuration for the django-mailer documentation.
# Build with:  sphinx-build -W -b html docs docs/_build/html

project = "django-mailer"
author = "django-mailer contributors"
copyright = "django-mailer contributors"

# The version is kept in mailer/__init__.py; it is not imported here so that
# the documentation builds without Django installed.
release = "3.0.0.dev0"
version = "3.0"

extensions = []

root_doc = "index"
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build"]
highlight_language = "python"

html_theme = "alabaster"
html_title = "django-mailer documentation"
