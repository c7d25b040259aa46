"""A strict reader of the multipart/form-data bodies HTTP clients send, for the fast paths.

Starlette's form parser (python-multipart under it) streams every part through callbacks
into a spooled temporary file: general, and a millisecond of Python for a small upload.
A body that is already in memory needs less: find the boundaries, read each part's two
headers. This reader accepts only the plain shape that curl, requests, httpx, browsers and
the bench send (CRLF line ends, ``Content-Disposition: form-data`` with a quoted name and an
optional quoted filename, an optional ``Content-Type``) and returns None for anything else:
a preamble, other headers, escapes in a name, a missing closing boundary. The caller then
hands the request to the FastAPI route, whose parser has the last word on odd bodies and
answers their errors; so what this reader accepts, it must read exactly as the route would.

As in Starlette, a part with a ``filename`` parameter is a file (even an empty name), any
other part a text field (UTF-8).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# boundary = 1*70 of RFC 2046's bchars; a quoted value may hold a space, but not at its end.
_BCHARS = "0-9A-Za-z'()+_,\\-./:=?"
_BOUNDARY = re.compile(rf'boundary=(?:"([{_BCHARS} ]{{0,69}}[{_BCHARS}])"|([{_BCHARS}]{{1,70}}))')
# Content-Disposition: form-data; name="..."[; filename="..."], nothing else, no escapes.
_DISPOSITION = re.compile(rb'form-data; name="([^"\\\r\n%]*)"(?:; filename="([^"\\\r\n%]*)")?')
_CONTENT_TYPE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# The route's parser refuses more files or fields than this (app.routers.body.read_form),
# and a text field over Starlette's part limit: such a body goes to it.
MAX_PARTS = 1000
MAX_FIELD_BYTES = 1024 * 1024


@dataclass
class Parts:
    """A body's files (their bytes, by field name) and text fields, each in body order."""

    files: dict[str, list[bytes]] = field(default_factory=dict)
    fields: dict[str, list[str]] = field(default_factory=dict)


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/form-data`` Content-Type value with no other parameter
    (a ``charset`` would change how the route decodes text fields), or None."""
    media, _, params = content_type.partition(";")
    if media != "multipart/form-data":  # exactly as the route tells it (app.routers.body)
        return None
    found = _BOUNDARY.fullmatch(params.strip())
    if found is None:
        return None
    return (found.group(1) or found.group(2)).encode("ascii")


def read_parts(body: bytes, boundary: bytes) -> Parts | None:
    """The parts of a multipart body in the plain shape (module doc), or None."""
    # Every delimiter is CRLF "--" boundary; the first one's CRLF is the body's start.
    segments = (b"\r\n" + body).split(b"\r\n--" + boundary)
    # No preamble; each part follows its delimiter's CRLF; the last delimiter closes ("--"),
    # with nothing after it but a CRLF.
    if len(segments) < 3 or segments[0] or segments[-1] not in (b"--", b"--\r\n"):
        return None
    parts = Parts()
    count = 0
    for segment in segments[1:-1]:
        if not segment.startswith(b"\r\n"):
            return None
        count += 1
        part = _read_part(segment[2:])
        if part is None or count > MAX_PARTS:
            return None
        name, filename, content = part
        if filename is not None:
            parts.files.setdefault(name, []).append(content)
            continue
        if len(content) > MAX_FIELD_BYTES:
            return None
        try:
            parts.fields.setdefault(name, []).append(content.decode("utf-8"))
        except UnicodeDecodeError:
            return None
    return parts


def _read_part(chunk: bytes) -> tuple[str, str | None, bytes] | None:
    """(field name, filename or None, content) of one part, or None when it is not plain."""
    head, sep, content = chunk.partition(b"\r\n\r\n")
    if not sep:
        return None
    disposition: re.Match[bytes] | None = None
    typed = False
    for line in head.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or b"\r" in line or b"\n" in line:  # a lone CR or LF: not plain
            return None
        name, value = name.lower(), value.strip()
        if name == b"content-disposition" and disposition is None:
            disposition = _DISPOSITION.fullmatch(value)
            if disposition is None:
                return None
        elif name == b"content-type" and not typed and _CONTENT_TYPE.fullmatch(value):
            typed = True
        else:
            return None
    if disposition is None:
        return None
    try:
        field_name = disposition.group(1).decode("utf-8")
        filename = disposition.group(2)
        return field_name, None if filename is None else filename.decode("utf-8"), content
    except UnicodeDecodeError:
        return None
