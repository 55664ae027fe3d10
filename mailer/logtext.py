"""Text from an email made safe for a log line.

Subjects and addresses are whatever the sender of a form or a 2.x row put in them. Written raw, an
ANSI escape sequence recolours or clears the terminal that tails the log, a carriage return, NEL or
U+2028/U+2029 makes one record read as two (a forged second line), and a bidirectional override
reorders what a viewer shows. :func:`loggable` writes each such character as its Python escape
(``\\x1b``, ``\\u2028``), so it is seen, not obeyed; all other text is left as it is.
"""

from __future__ import annotations

import unicodedata

# Bidirectional embedding, override and isolate controls, and the invisible direction marks.
_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]


_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escape(codepoint: int) -> str:
    if codepoint in _NAMED:
        return _NAMED[codepoint]
    return f"\\x{codepoint:02x}" if codepoint < 0x100 else f"\\u{codepoint:04x}"


# Every control character (C0, DEL, C1: category Cc), the line and paragraph separators, the bidi controls.
_TABLE = {
    cp: _escape(cp)
    for cp in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *_BIDI]
    if unicodedata.category(chr(cp)) in ("Cc", "Zl", "Zp", "Cf")
}


def loggable(text: object) -> str:
    """``text`` as a string with control characters, U+2028/U+2029 and bidi controls escaped visibly."""
    return str(text).translate(_TABLE)


# ``extra=`` of the log records about one message's fate ("sending message ...", a refusal, a failure):
# the commands' own output, when the project's LOGGING does not handle django-mailer's records, leaves
# them out below ERROR and says what they say in one summary line (mailer.management.output).
PER_MESSAGE = {"mailer_per_message": True}
