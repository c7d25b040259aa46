"""The original bytes and thumbnails of items: what the web page (and an audio player
seeking) asks for. Range requests (206), validators (ETag, 304), and errors in the API's
shape."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.routers.items import _one_range
from tests.conftest import error_code
from tests.factories import image_bytes


def add_image(client: TestClient, collection: str, size: tuple[int, int]) -> tuple[str, bytes]:
    data = image_bytes("RGB", size=size, fmt="JPEG")
    response = client.post(
        f"/v1/collections/{collection}/items", files={"file": ("a.jpg", data)}, data={"id": "pic"}
    )
    assert response.status_code == 201, response.text
    return "pic", data


def test_a_thumbnail_is_a_small_jpeg_of_the_image(client: TestClient, collection: str) -> None:
    item_id, _ = add_image(client, collection, (900, 600))
    url = f"/v1/collections/{collection}/items/{item_id}/thumbnail"
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.content))
    assert thumb.format == "JPEG" and max(thumb.size) == 256
    assert thumb.size[0] / thumb.size[1] == pytest.approx(1.5, rel=0.02)  # its proportions
    etag = response.headers["etag"]
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert "no-cache" in response.headers["cache-control"]


def test_a_small_image_is_not_enlarged(client: TestClient, collection: str) -> None:
    item_id, _ = add_image(client, collection, (120, 80))
    response = client.get(f"/v1/collections/{collection}/items/{item_id}/thumbnail")
    assert Image.open(io.BytesIO(response.content)).size == (120, 80)


def test_only_images_and_videos_have_thumbnails(client: TestClient, collection: str) -> None:
    client.post(f"/v1/collections/{collection}/items", json={"id": "t", "text": "words"})
    response = client.get(f"/v1/collections/{collection}/items/t/thumbnail")
    assert response.status_code == 404 and error_code(response) == "not_found"
    assert "only image and video items" in response.json()["error"]["message"]
    missing = client.get(f"/v1/collections/{collection}/items/nope/thumbnail")
    assert missing.status_code == 404 and error_code(missing) == "not_found"


def test_content_answers_a_range_and_its_validator(client: TestClient, collection: str) -> None:
    item_id, data = add_image(client, collection, (64, 48))
    url = f"/v1/collections/{collection}/items/{item_id}/content"
    whole = client.get(url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["etag"] == f'"{whole.headers["etag"].strip(chr(34))}"'
    part = client.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    tail = client.get(url, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == data[-5:]
    rest = client.get(url, headers={"Range": f"bytes={len(data) - 3}-"})
    assert rest.status_code == 206 and rest.content == data[-3:]
    assert client.get(url, headers={"If-None-Match": whole.headers["etag"]}).status_code == 304


def test_a_range_past_the_end_is_416_in_the_apis_shape(client: TestClient, collection: str) -> None:
    item_id, data = add_image(client, collection, (64, 48))
    url = f"/v1/collections/{collection}/items/{item_id}/content"
    response = client.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert response.status_code == 416
    assert error_code(response) == "range_not_satisfiable"
    assert response.headers["content-range"] == f"bytes */{len(data)}"


@pytest.mark.parametrize(
    "header",
    ["bytes=5-2", "bytes=0-1,4-5", "items=0-3", "bytes=x-", "bytes", "bytes=0-" + "9" * 4301],
)
def test_a_range_it_does_not_take_gets_the_whole(
    client: TestClient, collection: str, header: str
) -> None:
    """Several ranges, another unit or a malformed one: ignored, as RFC 9110 allows."""
    client.post(f"/v1/collections/{collection}/items", json={"id": "t", "text": "some words"})
    response = client.get(
        f"/v1/collections/{collection}/items/t/content", headers={"Range": header}
    )
    assert response.status_code == 200 and response.content == b"some words"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 50), st.text(st.sampled_from("0123456789-=,bytes x"), max_size=14))
def test_a_range_read_is_always_within_the_data(size: int, spec: str) -> None:
    for header in (spec, "bytes=" + spec):
        found = _one_range(header, size)
        if found is not None:
            first, last = found
            assert 0 <= first <= last <= max(size - 1, 0) or first >= size


def test_validators_compare_weakly_and_if_range_guards_a_range(
    client: TestClient, collection: str
) -> None:
    item_id, data = add_image(client, collection, (64, 48))
    url = f"/v1/collections/{collection}/items/{item_id}/content"
    etag = client.get(url).headers["etag"]
    assert client.get(url, headers={"If-None-Match": f"W/{etag}"}).status_code == 304
    assert client.get(url, headers={"If-None-Match": '"other", *'}).status_code == 304
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    # A range of the bytes the client has (its If-Range names them): the part.
    same = client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert same.status_code == 206 and same.content == data[:10]
    # Other bytes under the id since: the whole, never a part spliced onto old bytes.
    other = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert other.status_code == 200 and other.content == data


def test_a_large_original_is_sent_in_full_and_in_part(client: TestClient, collection: str) -> None:
    """Read from its file as it is sent, in chunks of 256 KiB: every byte of an original of
    several chunks, and of a range across them."""
    data = image_bytes("RGB", size=(1400, 1000), fmt="PNG")
    assert len(data) > 256 * 1024
    client.post(
        f"/v1/collections/{collection}/items", files={"file": ("a.png", data)}, data={"id": "big"}
    )
    url = f"/v1/collections/{collection}/items/big/content"
    whole = client.get(url)
    assert whole.content == data and whole.headers["content-length"] == str(len(data))
    part = client.get(url, headers={"Range": "bytes=100000-290000"})
    assert part.status_code == 206 and part.content == data[100_000:290_001]
