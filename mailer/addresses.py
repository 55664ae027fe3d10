"""How the don't-send list compares addresses: by the address alone, lower-cased by Python.

Python's ``str.lower()`` folds every script; the databases' ``LOWER()`` and ``LIKE`` do not all do so
(SQLite folds ASCII only), so entries are stored already folded and the database only compares.
"""

from __future__ import annotations

import re
from email.utils import parseaddr

# A bare address without display name, comment or quoting: its key is itself, lower-cased.
_BARE = re.compile(r"[^\s<>\"(),;:@\[\]\\]+@[^\s<>\"(),;:@\[\]\\]+")


def address_key(address: str) -> str:
    """``"Ann <ANN@x.org>"`` -> ``"ann@x.org"``: how the list matches an address."""
    if _BARE.fullmatch(address):
        return address.lower()
    return parseaddr(address)[1].lower()


def entry_key(address: str) -> str:
    """What a don't-send entry stores for ``address``: its key, or the text folded if it holds no address."""
    key = address_key(address.strip())
    return key if "@" in key else address.strip().lower()
