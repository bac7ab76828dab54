"""Validation of the client-given strings that end up in response headers.

A media type (RFC 6838 section 4.2, with RFC 9110 parameters) and a file name are stored
with an asset and later sent back as `Content-Type` and `Content-Disposition`, by the api
and by the bridge to S3. A CR/LF in either would split a header (or, as h11 refuses it,
turn every later download into a 500), so both are checked when the asset is made.
"""

from __future__ import annotations

import re

from store.errors import InvalidName

_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# A quoted-string of visible ASCII and spaces; a backslash escapes the next visible char.
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
_MEDIA_TYPE = re.compile(
    rf"(?P<type>{_NAME})/(?P<subtype>{_NAME})"
    rf"(?P<params>(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))*)"
)
MAX_MEDIA_TYPE = 200


def is_control(char: str) -> bool:
    """True for C0 controls, DEL and C1 controls (what must never reach a header)."""
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


def check_media_type(value: str) -> str:
    """`value` as a lowercase `type/subtype[; params]` if RFC 6838 allows it, else raise."""
    if not isinstance(value, str) or len(value) > MAX_MEDIA_TYPE:
        raise InvalidName(f"invalid media type {value!r}: at most {MAX_MEDIA_TYPE} characters")
    match = _MEDIA_TYPE.fullmatch(value.strip(" \t"))
    if match is None:
        raise InvalidName(
            f"invalid media type {value!r}: expected type/subtype of letters, digits and "
            "! # $ & ^ _ . + -, with optional ; name=value parameters"
        )
    essence = f"{match['type']}/{match['subtype']}".lower()
    return essence + match["params"]


def essence_of(value: str) -> str:
    """The lowercase `type/subtype` of a stored media type, or '' when it is not valid."""
    try:
        return check_media_type(value).split(";", 1)[0]
    except InvalidName:
        return ""


def check_filename(value: str) -> str:
    """`value` if it is a usable file name (no control characters, not '.' or '..'), else raise."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 255
        or value in (".", "..")
        or "/" in value
        or any(is_control(c) for c in value)
    ):
        raise InvalidName(
            f"invalid filename {value!r}: 1-255 characters, not '.' or '..', "
            "no slashes and no control characters"
        )
    return value


def check_header_text(kind: str, value: str) -> str:
    """`value` if it holds no control character (it may reach a header or S3 metadata)."""
    if any(is_control(c) for c in value):
        raise InvalidName(f"invalid {kind} {value!r}: control characters are not allowed")
    return value
