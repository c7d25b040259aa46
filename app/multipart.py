"""A strict reader of the multipart/form-data bodies HTTP clients send: the routes' form
reader (``app.routers.body.read_form``) and the fast paths' (``app.fastpath``).

Starlette's form parser (python-multipart under it) streams every part through callbacks
into a spooled temporary file: general, and several Python calls a part (docs/performance.md,
Bulk writes, has the profile). A body in the plain shape needs less: find the boundaries, read
each part's two headers. This reader accepts only the plain shape that curl, requests, httpx,
browsers and the bench send (CRLF line ends, ``Content-Disposition: form-data`` with a quoted
name and an optional quoted filename, an optional ``Content-Type``) and says so as soon as a
body is anything else: a preamble, other headers, escapes in a name, a missing closing
boundary. The caller then hands the body (``PartReader.spent`` gives back what was read) to
Starlette's parser, which has the last word on odd bodies and answers their errors; so what
this reader accepts, it must read exactly as Starlette would.

It reads a body chunk by chunk as it arrives and holds it about once: a part's bytes are
copied out of the read buffer when the part ends, or moved to a buffer of its own once they
pass ``SPILL_BYTES`` (one large upload is held once, not as the read buffer and a copy).

As in Starlette, a part with a ``filename`` parameter is a file (even an empty name), any
other part a text field (UTF-8).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

# boundary = 1*70 of RFC 2046's bchars; a quoted value may hold a space, but not at its end.
_BCHARS = "0-9A-Za-z'()+_,\\-./:=?"
_BOUNDARY = re.compile(rf'boundary=(?:"([{_BCHARS} ]{{0,69}}[{_BCHARS}])"|([{_BCHARS}]{{1,70}}))')
# Content-Disposition: form-data; name="..."[; filename="..."], nothing else, no escapes.
_DISPOSITION = re.compile(rb'form-data; name="([^"\\\r\n%]*)"(?:; filename="([^"\\\r\n%]*)")?')
_CONTENT_TYPE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Starlette refuses more files or fields than this (app.routers.body.read_form), and a text
# field over its part limit: such a body goes to it. A head of parts past MAX_HEAD_BYTES
# is not a plain one.
MAX_PARTS = 1000
MAX_FIELD_BYTES = 1024 * 1024
MAX_HEAD_BYTES = 16 * 1024
MAX_HEAD_LINE = 4096  # python-multipart refuses a header line over 4,224 bytes
SPILL_BYTES = 256 * 1024  # a part's bytes kept in the read buffer before they move out
_CRLF, _HEAD_END, _CLOSE = b"\r\n", b"\r\n\r\n", b"--"
_OPEN, _HEAD, _BODY, _END = range(4)  # where a reader is in the body


@dataclass
class Parts:
    """A body's files (their bytes, by field name) and text fields, each in body order;
    ``order`` names every part in body order (whether it is a file, and its name)."""

    files: dict[str, list[bytes]] = field(default_factory=dict)
    fields: dict[str, list[str]] = field(default_factory=dict)
    order: list[tuple[bool, str]] = field(default_factory=list, compare=False)


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/form-data`` Content-Type value with no other parameter
    (a ``charset`` would change how the route decodes text fields), or None."""
    media, _, params = content_type.partition(";")
    if media != "multipart/form-data":  # exactly as the route tells it (app.routers.body)
        return None
    found = _BOUNDARY.fullmatch(params.strip(" \t"))  # only what python-multipart strips
    if found is None:
        return None
    return (found.group(1) or found.group(2)).encode("ascii")


def read_parts(body: bytes, boundary: bytes) -> Parts | None:
    """The parts of a whole multipart body in the plain shape (module doc), or None."""
    reader = PartReader(boundary)
    reader.feed(body)
    return reader.finish()


class PartReader:
    """Reads a body in the plain shape from its chunks, in order (``feed``), and gives its
    parts at the end (``finish``). Once the body is found not plain, ``plain`` is false,
    ``feed`` takes nothing more, and ``spent`` gives back every byte fed, for another parser.
    Every delimiter is CRLF "--" boundary, the first one's CRLF the body's start; each is
    followed by a CRLF and a part, or by "--" (the end, then nothing but a CRLF)."""

    def __init__(self, boundary: bytes) -> None:
        self.plain = True
        self.parts = Parts()
        self._opening = _CLOSE + boundary + _CRLF
        self._delimiter = _CRLF + _CLOSE + boundary
        self._buf = bytearray()
        self._pos = 0  # the unread bytes of _buf begin here
        self._state = _OPEN
        self._scan = 0  # in a part's bytes, no delimiter begins before this (in _buf)
        self._spill: io.BytesIO | None = None  # a long part's bytes, moved out of _buf
        self._part: tuple[str, str | None] = ("", None)  # the part read: name, filename
        self._spent: list[bytes] = []  # what was read, as the objects kept (see spent)

    def feed(self, chunk: bytes) -> bool:
        """Read the next chunk of the body; whether the body is still plain."""
        if self.plain and chunk:
            self._buf += chunk
            self._read()
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0
        return self.plain

    def finish(self) -> Parts | None:
        """The parts, once the whole body was fed; None when it was not plain or ended short."""
        if not self.plain or self._state != _END:
            return None
        return self.parts

    def spent(self) -> Iterator[bytes]:
        """The bytes fed so far, exactly, in order (the parts read, then what was not)."""
        yield from self._spent
        if self._spill is not None:
            yield self._spill.getvalue()
        yield bytes(self._buf)

    def _refuse(self) -> None:
        self.plain = False

    def _take(self, n: int, kept: bytes) -> None:
        """Move past ``n`` bytes read, which ``kept`` holds."""
        self._pos += n
        self._spent.append(kept)

    def _read(self) -> None:
        buf = self._buf
        while self.plain:
            left = len(buf) - self._pos
            if self._state == _OPEN:
                opening = self._opening
                if left < len(opening):
                    if not opening.startswith(buf[self._pos :]):
                        self._refuse()
                    return
                if buf[self._pos : self._pos + len(opening)] != opening:
                    self._refuse()
                    return
                self._take(len(opening), opening)
                self._state, self._scan = _HEAD, self._pos
            elif self._state == _HEAD:
                # From where the last chunk's search stopped: a head fed a byte at a time is
                # not searched again from its start each time.
                since = max(self._pos, self._scan)
                end = buf.find(_HEAD_END, since, self._pos + MAX_HEAD_BYTES + len(_HEAD_END))
                if end < 0:
                    if left >= MAX_HEAD_BYTES + len(_HEAD_END):
                        self._refuse()
                    self._scan = max(self._pos, len(buf) - len(_HEAD_END) + 1)
                    return
                head = bytes(buf[self._pos : end])
                part = _read_head(head)
                if part is None or len(self.parts.order) >= MAX_PARTS:
                    self._refuse()
                    return
                self._part = part
                self._take(len(head), head)
                self._take(len(_HEAD_END), _HEAD_END)
                self._state, self._scan = _BODY, self._pos
            elif self._state == _BODY:
                if not self._read_body():
                    return
            else:  # _END: nothing more but a CRLF
                if left > len(_CRLF) or not _CRLF.startswith(buf[self._pos :]):
                    self._refuse()
                return

    def _read_body(self) -> bool:
        """Read on in a part's bytes; whether the part ended (and the reader went on)."""
        buf, delimiter = self._buf, self._delimiter
        found = buf.find(delimiter, self._scan)
        if found < 0 or len(buf) < found + len(delimiter) + 2:
            if found < 0:  # a delimiter may yet begin in the last bytes
                self._scan = max(self._scan, len(buf) - len(delimiter) + 1)
                if self._scan - self._pos > SPILL_BYTES:
                    self._spill = self._spill or io.BytesIO()
                    with memoryview(buf) as view:
                        self._spill.write(view[self._pos : self._scan])
                    self._pos = self._scan
            else:
                self._scan = found
            return False
        after = bytes(buf[found + len(delimiter) : found + len(delimiter) + 2])
        if after not in (_CRLF, _CLOSE):
            self._refuse()
            return False
        with memoryview(buf) as view:
            if self._spill is None:
                content = bytes(view[self._pos : found])
            else:
                self._spill.write(view[self._pos : found])
                content, self._spill = self._spill.getvalue(), None
        if not self._keep(content):
            # What was read of this part is spent but not kept: give it back as it was.
            self._spent.append(content)
            self._pos = found
            return False
        self._take(found - self._pos, content)
        self._take(len(delimiter) + 2, delimiter + after)
        self._state, self._scan = (_HEAD if after == _CRLF else _END), self._pos
        return True

    def _keep(self, content: bytes) -> bool:
        """Add the part read to ``parts``; False (and not plain) when it is not one."""
        name, filename = self._part
        if filename is not None:
            self.parts.files.setdefault(name, []).append(content)
            self.parts.order.append((True, name))
            return True
        if len(content) > MAX_FIELD_BYTES:
            self._refuse()
            return False
        try:
            self.parts.fields.setdefault(name, []).append(content.decode("utf-8"))
        except UnicodeDecodeError:
            self._refuse()
            return False
        self.parts.order.append((False, name))
        return True


def _read_head(head: bytes) -> tuple[str, str | None] | None:
    """(field name, filename or None) of a part's header lines, or None when they are not
    plain."""
    disposition: re.Match[bytes] | None = None
    typed = False
    for line in head.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or b"\r" in line or b"\n" in line:  # a lone CR or LF: not plain
            return None
        if len(line) > MAX_HEAD_LINE:  # python-multipart refuses a longer one
            return None
        name, value = name.lower(), value.strip(b" \t")  # python-multipart's white space
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
        return field_name, None if filename is None else filename.decode("utf-8")
    except UnicodeDecodeError:
        return None
