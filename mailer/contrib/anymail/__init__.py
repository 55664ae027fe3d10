"""Bounces, complaints and unsubscribes reported by an ESP put the recipient on the don't-send list.

Add ``"mailer.contrib.anymail"`` to ``INSTALLED_APPS`` next to ``"mailer"``, and django-anymail's webhook URLs to
the project's. Its ``tracking`` signal then reaches :func:`~mailer.contrib.anymail.receivers.on_tracking`, and
:mod:`mailer.bounces` decides what each event does. See "Bounces and complaints" in the documentation.
"""
