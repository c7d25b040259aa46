"""The search page's files as the service serves them (the page itself is tested in a
browser, tests/ui)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from app.ui import POLICY


def test_the_root_sends_browsers_to_the_page(client: TestClient) -> None:
    for method in ("GET", "HEAD"):
        response = client.request(method, "/", follow_redirects=False)
        assert response.status_code == 307 and response.headers["location"] == "/ui/"


def test_the_page_goes_out_with_a_same_host_policy(client: TestClient) -> None:
    for path in ("/ui/", "/ui/app.js", "/ui/style.css"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-security-policy"] == POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-cache"
        again = client.get(path, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
    assert "default-src 'self'" in POLICY and "script-src 'self'" in POLICY
    assert "unsafe-inline" not in POLICY and "unsafe-eval" not in POLICY


def test_the_page_needs_no_key_and_names_nothing_of_another_host(
    make_settings: Callable[..., Settings],
) -> None:
    with TestClient(create_app(make_settings(api_keys="secret"))) as keyed:
        assert keyed.get("/v1/collections").status_code == 401
        for path in ("/ui/", "/ui/app.js", "/ui/style.css"):
            response = keyed.get(path)
            assert response.status_code == 200, path
            # SVG's namespace is a name, not an address the page fetches.
            text = response.text.replace('"http://www.w3.org/2000/svg"', "")
            assert "http://" not in text and "https://" not in text, path
