"""The rule for identifiers clients choose (item ids, metadata keys): one spelling per name.

Two ids that print alike must not name two items, and an id must not hide what it is: text
is normalised to NFC (so "café" typed on a Mac, NFD, is the same id as on Linux), and
characters that do not print or that reorder text (controls, format characters such as the
bidi overrides U+202A-U+202E and U+2066-U+2069 or zero-width ones, line and paragraph
separators) are refused, as are the path segments "." and "..". docs/security.md
("Identifiers") states the rule for users.
"""

from __future__ import annotations

import unicodedata

MAX_ID_CHARS = 255
MAX_KEY_CHARS = 255
# Unicode general categories that never print as themselves: controls (Cc), format
# characters (Cf: bidi overrides and isolates, zero-width joiners, soft hyphen),
# line (Zl) and paragraph (Zp) separators.
HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})
# Metadata keys keep their control characters (Cc): they always could hold them, NUL
# included, and JSON answers show them escaped; what reorders or hides text is refused.
KEY_HIDDEN = HIDDEN - {"Cc"}


def hidden_char(text: str, categories: frozenset[str] = HIDDEN) -> str | None:
    """The first character of ``text`` in one of these categories, or None."""
    return next((c for c in text if unicodedata.category(c) in categories), None)


def _refuse_hidden(text: str, what: str, categories: frozenset[str] = HIDDEN) -> None:
    char = hidden_char(text, categories)
    if char is not None:
        raise ValueError(
            f"{what} must not contain U+{ord(char):04X} {unicodedata.name(char, '(unnamed)')}: "
            "control, format (bidi, zero-width) and separator characters hide what it says"
        )


def check_id(value: str) -> str:
    """An item id in NFC; ValueError saying what is wrong with any other."""
    text = unicodedata.normalize("NFC", value)
    if not 1 <= len(text) <= MAX_ID_CHARS:
        raise ValueError(f"an id has 1 to {MAX_ID_CHARS} characters")
    if text != text.strip():
        raise ValueError("an id must not start or end with whitespace")
    if "/" in text or text in (".", ".."):
        raise ValueError("an id must not contain '/' nor be '.' or '..'")
    _refuse_hidden(text, "an id")
    return text


def check_key(value: str) -> str:
    """A metadata (or filter) key in NFC; ValueError for one with format or bidi
    characters or line separators."""
    text = unicodedata.normalize("NFC", value)
    if len(text) > MAX_KEY_CHARS:  # a filter could never find it (tags hold 255)
        raise ValueError(f"a metadata key has at most {MAX_KEY_CHARS} characters")
    _refuse_hidden(text, f"metadata key {text[:40]!r}", KEY_HIDDEN)
    return text
