"""
The API key's guards: the scrubber that hides it in any text from Gravity, and the auth that adds it to requests.

The key must never appear in an exception, a log line or a ``repr``: the scrubber and the auth hold it only in
closures, and every text that comes back from Gravity (or from anything pretending to be it) goes through the
scrubber before it reaches an error message or the delivery log.
"""

from __future__ import annotations

import base64
import re

import requests

AUTH_HEADER_STYLES = ("bearer", "x-api-key")
_MESSAGE_LIMIT = 300
#: Characters of the key that, found together in a text, are scrubbed as if they were the key.
_KEY_STRETCH = 8
#: The longest way a character of a key form can be written in a text: JSON's ``\\uXXXX``.
_LONGEST_ESCAPE = 6
_JSON_BACKSLASHED = frozenset('/"\\')
_URL_SAFE_BASE64 = str.maketrans("+/", "-_")


def check_api_key(api_key: str) -> None:
    """
    Check that ``api_key`` can be sent in an HTTP header.

    :raises ValueError: for an empty key, or one with spaces, line breaks, control or non-ASCII characters.
    """
    if not api_key:
        raise ValueError("A Gravity API key is required (the connection's password).")
    if not (api_key.isascii() and api_key.isprintable()) or any(c.isspace() for c in api_key):
        raise ValueError(
            "The Gravity API key holds characters an HTTP header cannot carry (spaces, line breaks, control or "
            "non-ASCII characters): check the connection's password."
        )


class KeyScrubber:
    """
    Replaces the API key by ``***`` in any text that comes from Gravity (or from anything pretending to
    be it), in every form of :func:`key_forms` (the key, any 8-character stretch of it, its hex, its base64
    and url-safe base64 at each byte alignment), each in any letter case and with any of its characters
    percent-encoded or JSON-escaped. Texts are also cut to 300 printable characters, so an answer cannot
    flood the log or the delivery log.

    The key lives only in a closure, so neither ``vars()`` nor ``repr`` of this object shows it.

    :param api_key: the key to hide.
    """

    def __init__(self, api_key: str) -> None:
        forms = key_forms(api_key)
        folded = tuple(sorted({form.lower() for form in forms}, key=len, reverse=True))
        # Only the head of a text can reach the characters kept: a match covers at most `longest` characters and
        # leaves 3, so scrubbing this many gives the same first 300 as scrubbing the whole (16 MiB) text.
        longest = _LONGEST_ESCAPE * max(map(len, forms))
        window = longest * (_MESSAGE_LIMIT // 3 + 2)
        compiled: list[re.Pattern[str]] = []  # built on first need: most runs never get a text that needs it

        def pattern() -> re.Pattern[str]:
            if not compiled:
                patterns = sorted({_escaped_form_pattern(form) for form in forms}, key=len, reverse=True)
                compiled.append(re.compile("|".join(patterns), re.IGNORECASE))
            return compiled[0]

        def hide(text: str) -> str:
            text = text[:window]
            # In ASCII without % or \ a form can only be written as is, in some letter case: the pattern finds
            # nothing there unless a lower-cased form is in the lower-cased text (0.01 ms instead of 2).
            if text.isascii() and "%" not in text and "\\" not in text:
                lowered = text.lower()
                if not any(form in lowered for form in folded):
                    return text
            return pattern().sub("***", text)

        self._hide = hide

    def __call__(self, text: object) -> str:
        scrubbed = self._hide(str(text))  # the whole text first: cutting first could leave part of a key
        printable = "".join(c if c.isprintable() else " " for c in scrubbed[:_MESSAGE_LIMIT])
        return self._hide(printable)

    def __repr__(self) -> str:
        return "KeyScrubber(***)"


def key_forms(api_key: str) -> set[str]:
    """
    Return the texts :class:`KeyScrubber` hides: the key; each stretch of 8 of its characters (a server that knows
    the key may echo part of it: enough to guess the rest); its UTF-8 bytes in hex; and its base64 and url-safe
    base64 at each of the three places it can start in a 3-byte group (:func:`base64_core`), which covers the
    key base64-encoded after any prefix (``base64("t=" + KEY)``, ``Basic`` credentials), padded or not.
    """
    raw = api_key.encode()
    forms = {api_key, raw.hex()}
    stretch = min(len(api_key), _KEY_STRETCH)
    forms.update(api_key[start : start + stretch] for start in range(len(api_key) - stretch + 1))
    for offset in range(3):
        core = base64_core(raw, offset)
        forms.update({core, core.translate(_URL_SAFE_BASE64)})
    return {form for form in forms if form}


def base64_core(raw: bytes, offset: int) -> str:
    """
    Return the base64 characters that encode ``raw`` and nothing else when it starts ``offset`` bytes (0, 1 or 2)
    into a 3-byte group: they are the same whatever bytes come before and after it, and whether the text is
    padded or not.

    (A character holds 6 bits; one that holds a bit of the bytes around ``raw`` is left out.)
    """
    encoded = base64.b64encode(bytes(offset) + raw).decode()
    first = -(-8 * offset // 6)  # the first character whose 6 bits all belong to raw
    end = 8 * (offset + len(raw)) // 6  # one past the last such character
    return encoded[first:end]


def _escaped_form_pattern(form: str) -> str:
    """
    Build a pattern of ``form`` in which each character may also appear, in either letter case, percent-encoded
    (whatever characters the encoder kept), JSON-escaped (``\\uXXXX``, ``\\/``, ``\\"``, ``\\\\``), or as
    ``+`` for a space.
    """
    parts = []
    for character in form:
        forms = {re.escape(character)}
        for spelling in {character, character.lower(), character.upper()}:  # escaped in any letter case too
            forms.update(re.escape(f"%{byte:02X}") for byte in spelling.encode("utf-8", "surrogatepass"))
            forms.add(re.escape(f"\\u{ord(spelling):04x}"))
        if character in _JSON_BACKSLASHED:
            forms.add(re.escape(f"\\{character}"))
        if character == " ":
            forms.add(re.escape("+"))
        parts.append(f"(?:{'|'.join(sorted(forms, key=len, reverse=True))})")
    return "".join(parts)


class ApiKeyAuth(requests.auth.AuthBase):
    """Adds the API key to each request; only a closure holds it, so no header dict, ``vars()`` or ``repr`` does."""

    def __init__(self, api_key: str, style: str) -> None:
        name, value = ("Authorization", f"Bearer {api_key}") if style == "bearer" else ("X-API-Key", api_key)

        def sign(request: requests.PreparedRequest) -> requests.PreparedRequest:
            request.headers[name] = value
            return request

        self._sign = sign
        self._name = name

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return self._sign(request)

    def __repr__(self) -> str:
        return f"ApiKeyAuth({self._name}: ***)"
