"""The upgrade test (``tests/test_upgrade.py``): mail queued under Django 5.2 is sent intact under Django 6.1."""
