"""The fast path's multipart reader reads what it accepts exactly as Starlette's form parser
(the route's) does, and declines what it is not sure of."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from app.fastpath.multipart import Parts, boundary_of, read_parts
from app.routers.body import Form, read_form

BOUNDARY = b"b0undary-x7"
CTYPE = "multipart/form-data; boundary=" + BOUNDARY.decode()


def body_of(parts: list[tuple[str, str | None, bytes, str | None]], boundary: bytes) -> bytes:
    """The plain shape: (name, filename or None, content, content type or None) per part."""
    out = b""
    for name, filename, content, ctype in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        head = f"Content-Disposition: {disposition}\r\n"
        if ctype:
            head += f"Content-Type: {ctype}\r\n"
        out += b"--" + boundary + b"\r\n" + head.encode() + b"\r\n" + content + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def starlette_parts(body: bytes, content_type: str) -> Parts | None:
    """What the route's parser makes of a body (None: it refuses it)."""

    async def parse() -> Parts | None:
        sent = False

        async def receive() -> dict[str, object]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        headers = [(b"content-type", content_type.encode("latin-1"))]
        request = Request({"type": "http", "method": "POST", "headers": headers}, receive)
        try:
            form = await request.form(max_files=1000, max_fields=1000)
        except MultiPartException:
            return None
        parts = Parts()
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                parts.files.setdefault(key, []).append(await value.read())
            else:
                parts.fields.setdefault(key, []).append(value)
        await form.close()
        return parts

    return asyncio.run(parse())


names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\%'), max_size=12
)
contents = st.one_of(
    st.binary(max_size=64),
    st.lists(
        st.sampled_from([b"\r\n", b"--", BOUNDARY, b"-", b"\r", b"\n", b"x", b"\xff\xd8", b" "]),
        max_size=12,
    ).map(b"".join),
)
part = st.tuples(
    names,
    st.one_of(st.none(), names),
    contents,
    st.sampled_from([None, "image/jpeg", "text/plain", "application/octet-stream"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(part, min_size=1, max_size=5))
def test_what_it_reads_the_route_reads_alike(
    parts: list[tuple[str, str | None, bytes, str | None]],
) -> None:
    body = body_of(parts, BOUNDARY)
    mine = read_parts(body, BOUNDARY)
    theirs = starlette_parts(body, CTYPE)
    if mine is not None:
        assert theirs == mine


@settings(max_examples=300, deadline=None)
@given(
    st.lists(part, min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(0, 10_000), st.binary(max_size=4)), min_size=1, max_size=3),
)
def test_a_damaged_body_it_accepts_is_read_alike(
    parts: list[tuple[str, str | None, bytes, str | None]], edits: list[tuple[int, bytes]]
) -> None:
    body = body_of(parts, BOUNDARY)
    for at, insert in edits:  # overwrite a few bytes somewhere
        at %= len(body)
        body = body[:at] + insert + body[at + len(insert) :]
    mine = read_parts(body, BOUNDARY)
    if mine is not None:
        assert starlette_parts(body, CTYPE) == mine


def test_a_header_line_with_a_lone_cr_is_left_to_the_route() -> None:
    """Found by the property above: a header line ending in a lone CR (before the CRLF) is
    refused by Starlette's parser; stripping it as white space would read what the route
    refuses."""
    body = (
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="f"; filename="a"\r\r\n'
        b"\r\nx\r\n--" + BOUNDARY + b"--\r\n"
    )
    assert starlette_parts(body, CTYPE) is None
    assert read_parts(body, BOUNDARY) is None


def test_a_plain_body_is_read() -> None:
    body = body_of(
        [
            ("file", "a.jpg", b"\xff\xd8jpeg\r\n--not-it", "image/jpeg"),
            ("collection", None, "caf\u00e9s".encode(), None),
            ("file", "", b"", None),  # an empty filename is still a file, as in Starlette
        ],
        BOUNDARY,
    )
    parts = read_parts(body, BOUNDARY)
    assert parts == Parts(
        files={"file": [b"\xff\xd8jpeg\r\n--not-it", b""]}, fields={"collection": ["caf\u00e9s"]}
    )
    assert parts == starlette_parts(body, CTYPE)


@pytest.mark.parametrize(
    "body",
    [
        b"preamble\r\n" + body_of([("file", "a", b"x", None)], BOUNDARY),
        body_of([("file", "a", b"x", None)], BOUNDARY)[:-4],  # no closing boundary
        body_of([("file", "a", b"x", None)], BOUNDARY) + b"epilogue",
        body_of([("file", "a", b"x", None)], BOUNDARY).replace(b"form-data;", b"form-data ;"),
        body_of([("file", "a", b"x", None)], BOUNDARY).replace(b"\r\n\r\n", b"\n\n"),
        body_of([("file", "a", b"x", "image/jpeg; q=1")], BOUNDARY),  # a parameter
        body_of([("file", "a", b"x", None)], BOUNDARY).replace(
            b"\r\n\r\n", b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        ),
        body_of([("note", None, b"\xff\xfe", None)], BOUNDARY),  # not UTF-8
        body_of([("note", None, b"x" * (1024 * 1024 + 1), None)], BOUNDARY),  # over 1 MiB
        body_of([("file", "a", b"x", None)] * 1001, BOUNDARY),  # over 1000 parts
        b"--" + BOUNDARY + b"--\r\n",  # no part at all
    ],
)
def test_an_unusual_body_is_left_to_the_route(body: bytes) -> None:
    assert read_parts(body, BOUNDARY) is None


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ("multipart/form-data;boundary=abc", b"abc"),
        ('multipart/form-data; boundary="a b:c"', b"a b:c"),
        ("multipart/form-data; boundary=" + "a" * 70, b"a" * 70),
        ("multipart/form-data; boundary=" + "a" * 71, None),
        ('multipart/form-data; boundary="abc "', None),
        ("multipart/form-data; boundary=abc; charset=latin-1", None),  # the route decodes by it
        ("Multipart/Form-Data; boundary=abc", None),  # the route answers 415
        ("multipart/form-data", None),
        ("multipart/mixed; boundary=abc", None),
        ("application/json", None),
    ],
)
def test_the_boundary_comes_only_from_a_plain_content_type(
    content_type: str, boundary: bytes | None
) -> None:
    assert boundary_of(content_type) == boundary


def test_the_routes_form_reader_holds_one_copy_of_the_files() -> None:
    """``read_form`` (the routes' multipart reader) gives each part's spooled copy back as
    soon as its bytes are read: at its peak it holds the files about once, not twice (the
    request body budget counts them once)."""
    files = [bytes([i]) * 400_000 for i in range(40)]  # 16 MB in parts kept in memory
    body = body_of([("file", f"f{i}.bin", f, "image/jpeg") for i, f in enumerate(files)], BOUNDARY)
    chunks = [body[i : i + 65_536] for i in range(0, len(body), 65_536)]

    async def read() -> tuple[Form, int]:
        left = list(chunks)

        async def receive() -> dict[str, object]:
            if not left:
                return {"type": "http.disconnect"}
            chunk = left.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(left)}

        headers = [(b"content-type", CTYPE.encode("latin-1"))]
        request = Request({"type": "http", "method": "POST", "headers": headers}, receive)
        tracemalloc.start()
        try:
            form = await read_form(request)
            return form, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    form, peak = asyncio.run(read())
    assert form.files == files
    held = sum(map(len, files))
    assert peak < 1.3 * held, f"read_form held {peak / held:.2f} times the files at its peak"
