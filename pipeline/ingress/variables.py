"""What ``call_inbound`` may tell the voice agent, and in what form.

The caller is unverified: caller ID can be spoofed, and a customer's name comes from booking
data that anyone booking a public event type can type (docs/ingress.md, "What the agent is
told about a caller"). Dynamic variables are pasted into the agent's prompt, so a value is a
prompt-injection channel into another person's call. The rules here:

* our own names (branch, company) are normalised (NFKC), stripped of control and format
  characters (bidi overrides, zero-width joiners), whitespace-collapsed and length-capped;
* a customer's name is passed only when it looks like a plain personal name: letters of any
  script, single spaces, hyphens, apostrophes or periods between them, at most
  ``NAME_MAX_WORDS`` words and ``NAME_MAX_CHARS`` characters, and none of a few words that
  address an assistant. Anything else is dropped whole (the agent greets without a name),
  never trimmed into something that still carries part of the text.
"""

from __future__ import annotations

import re
import unicodedata

NAME_MAX_CHARS = 40
NAME_MAX_WORDS = 4
PLACE_MAX_CHARS = 80

# One "word": letters (any script) with marks; words joined by one space, hyphen, apostrophe
# or period. \w minus digits and underscore is "letters and marks" in Python's re.
_WORD = r"[^\W\d_]+"
_NAME = re.compile(rf"{_WORD}(?:(?:[ '\-]|\. ?){_WORD})*\.?")

# Words that address the agent rather than name a person: a cheap second line of defence;
# the first is that the value must look like a name at all.
_ADDRESSING = frozenset(
    {
        "ignore", "disregard", "instruction", "instructions", "prompt", "system",
        "assistant", "agent", "ai", "bot", "previous", "override", "pretend", "forget",
        "say", "tell", "reveal", "you", "your", "must", "should", "always", "never",
    }
)  # fmt: skip


def _printable(raw: str) -> str:
    text = unicodedata.normalize("NFKC", raw)
    # Cc (controls), Cf (format: bidi overrides, zero-width), Cs/Co/Cn: never in a prompt.
    kept = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return " ".join(kept.split())


def place_name(raw: str | None) -> str:
    """A branch or company name (our own data) made safe to paste into a prompt."""
    text = _printable(raw or "")
    if len(text) > PLACE_MAX_CHARS:
        text = text[:PLACE_MAX_CHARS].rsplit(" ", 1)[0] or text[:PLACE_MAX_CHARS]
    return text


def _in_a_name(ch: str) -> bool:
    """A letter, a combining mark, or one of the separators of :data:`_NAME`."""
    return ch.isalpha() or unicodedata.category(ch)[0] == "M" or ch in " '-."


def caller_name(raw: str | None) -> str | None:
    """The customer's name if it is a plain personal name, else None (see the module doc)."""
    if not raw:
        return None
    text = _printable(raw)
    if not text or len(text) > NAME_MAX_CHARS or not _NAME.fullmatch(text):
        return None
    if not all(_in_a_name(ch) for ch in text):  # \w also holds numerals: 〇, 𒐀 (Nl, No)
        return None
    words = re.split(r"[ '\-.]+", text.lower())
    if len([w for w in words if w]) > NAME_MAX_WORDS or _ADDRESSING.intersection(words):
        return None
    return text
