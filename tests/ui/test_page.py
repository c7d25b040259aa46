"""The search page in a real browser (headless Chromium): what users do with it, against a
real server on mmr-mini; no request leaves the host and the console stays clean in every
test (the ``page`` fixture checks both)."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from PIL import Image

from models.synth.world.images import render_scene
from models.synth.world.vocabulary import Thing
from tests.ui.conftest import KEY, Site, open_page
from tests.ui.demo import COLLECTION, clip, wav

pytestmark = pytest.mark.slow

SEARCH = f"/v1/collections/{COLLECTION}/search"


def api_ids(site: Site, body: dict[str, Any]) -> list[str]:
    headers = {"Authorization": f"Bearer {site.key}"} if site.key else {}
    found = httpx.post(site.url + SEARCH, json=body, headers=headers, timeout=30)
    found.raise_for_status()
    return [hit["item"]["id"] for hit in found.json()["results"]]


def shown_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("#results > li", "items => items.map(i => i.dataset.id)")


def only(page: Any, modality: str) -> None:
    """Untick every kind of item but one."""
    for box in ("image", "text", "audio", "video"):
        page.set_checked(f'input[name="modality"][value="{box}"]', box == modality)


def wait_for_count(page: Any, words: str, timeout_ms: int = 20_000) -> None:
    page.wait_for_selector(f'#result-count:has-text("{words}")', timeout=timeout_ms)


def drop(page: Any, target: str, name: str, mime: str, data: bytes) -> None:
    """Drop a file on an element as a user's drag and drop does (a DataTransfer holding it)."""
    transfer = page.evaluate_handle(
        """([name, mime, bytes]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, {type: mime}));
            return transfer;
        }""",
        [name, mime, list(data)],
    )
    page.dispatch_event(target, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(target, "drop", {"dataTransfer": transfer})


def picture_of(caption_objects: tuple[dict[str, str], ...], seed: int) -> bytes:
    image = render_scene(Thing(objects=caption_objects), np.random.default_rng(seed))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def test_typing_shows_the_thumbnails_the_api_ranks_in_its_order(page: Any, site: Site) -> None:
    only(page, "image")
    page.fill("#query", "a red square")
    wait_for_count(page, "results for “a red square”")
    expected = api_ids(site, {"text": "a red square", "k": 24, "modalities": ["image"]})
    assert shown_ids(page) == expected
    assert set(expected) <= set(site.demo.images)
    # Every thumbnail arrives once it comes near the screen, decoded by the browser.
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        widths = page.eval_on_selector_all("#results img", "imgs => imgs.map(i => i.naturalWidth)")
        if widths and all(w > 0 for w in widths):
            break
        time.sleep(0.1)
    assert widths and all(0 < w <= 256 for w in widths), widths
    # The best of them shows what was asked for (mmr-mini knows its own world).
    best = site.demo.images[expected[0]]
    assert "red" in best and "square" in best, best


def test_typing_again_replaces_the_results_and_says_how_many(page: Any, site: Site) -> None:
    page.fill("#query", "a large circle")
    wait_for_count(page, "for “a large circle”")
    page.fill("#query", "small triangle")
    wait_for_count(page, "for “small triangle”")
    assert shown_ids(page) == api_ids(site, {"text": "small triangle", "k": 24})
    assert page.get_attribute("#result-count", "aria-live") == "polite"


def test_dropping_a_picture_searches_by_it(page: Any, site: Site) -> None:
    only(page, "image")
    # A render of a stored picture's scene in another draw: its twin should come first.
    blue = picture_of(
        ({"shape": "circle", "colour": "blue", "size": "large", "position": "center"},), seed=5
    )
    drop(page, "#search-section", "query.jpg", "image/jpeg", blue)
    wait_for_count(page, "for the file query.jpg")
    ids = shown_ids(page)
    assert ids and all(i in site.demo.images for i in ids)
    headers = {"Authorization": f"Bearer {site.key}"} if site.key else {}
    expected = httpx.post(
        site.url + SEARCH,
        files={"file": ("query.jpg", blue, "image/jpeg")},
        data={"k": "24", "modalities": "image"},
        headers=headers,
        timeout=30,
    ).json()
    assert ids == [hit["item"]["id"] for hit in expected["results"]]


def test_dropping_a_sound_searches_by_it_and_the_player_seeks_to_the_match(
    page: Any, site: Site
) -> None:
    only(page, "audio")
    tone = wav(clip({"kind": "tone", "pitch": "high"}, np.random.default_rng(9)))
    drop(page, "#search-section", "tone.wav", "audio/wav", tone)
    wait_for_count(page, "for the file tone.wav")
    ids = shown_ids(page)
    assert ids and all(i in site.demo.sounds for i in ids)
    # Words too: the long recording's moment of a high tone is where its player starts.
    page.fill("#query", "a high tone")
    wait_for_count(page, "for “a high tone”")
    headers = {"Authorization": f"Bearer {site.key}"} if site.key else {}
    hits = httpx.post(
        site.url + SEARCH,
        json={"text": "a high tone", "k": 24, "modalities": ["audio"]},
        headers=headers,
        timeout=30,
    ).json()["results"]
    long = next(h for h in hits if h["item"]["id"] == site.demo.long_sound)
    assert long["start"] > 0  # the match is not the recording's beginning
    player = f'#results > li[data-id="{site.demo.long_sound}"] audio'
    deadline = time.monotonic() + 20
    position = -1.0
    while time.monotonic() < deadline:
        position = page.eval_on_selector(player, "a => a.readyState > 0 ? a.currentTime : -1")
        if position >= 0:
            break
        time.sleep(0.1)
    assert position == pytest.approx(long["start"], abs=0.05)


def test_more_like_this_and_more_results(page: Any, site: Site) -> None:
    page.fill("#query", "a picture")
    wait_for_count(page, "24 results")
    first = shown_ids(page)[0]
    page.click(f'button[aria-label="More like {first}"]')
    wait_for_count(page, f"items like {first}")
    assert shown_ids(page) == api_ids(site, {"item_id": first, "k": 24})
    # The next page is asked for (offset), appended: the first page's results stay as they are.
    page.eval_on_selector("#results > li", "li => { li.dataset.kept = 'yes'; }")
    with page.expect_request(lambda r: r.url.endswith(SEARCH)) as asked:
        page.click("#more")
    assert asked.value.post_data_json == {"item_id": first, "k": 24, "offset": 24}
    deadline = time.monotonic() + 10
    while len(shown_ids(page)) <= 24 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert shown_ids(page) == api_ids(site, {"item_id": first, "k": 48})
    assert page.eval_on_selector("#results > li", "li => li.dataset.kept") == "yes"
    wait_for_count(page, f"{len(shown_ids(page))} results for items like")


def test_filters_by_metadata(page: Any, site: Site) -> None:
    page.fill("#filter", "kind = picture\ngroup = g3")
    page.fill("#query", "anything")
    wait_for_count(page, "1 result for")
    assert shown_ids(page) == ["picture-03.jpg"]


def test_exact_words_find_a_metadata_value_and_both_ways_blend(page: Any, site: Site) -> None:
    page.select_option("#mode", "lexical")
    page.fill("#query", "g3")
    expected = api_ids(site, {"text": "g3", "mode": "lexical", "k": 24})
    assert expected
    wait_for_count(page, f"{len(expected)} result{'' if len(expected) == 1 else 's'} for")
    assert shown_ids(page) == expected
    page.select_option("#mode", "hybrid")
    blended = api_ids(site, {"text": "g3", "mode": "hybrid", "k": 24})
    page.wait_for_function(
        "ids => [...document.querySelectorAll('#results > li')].map(i => i.dataset.id)"
        ".join() === ids.join()",
        arg=blended,
        timeout=20_000,
    )


def test_uploading_files_shows_progress_and_each_files_outcome(
    page: Any, site: Site, tmp_path: Path
) -> None:
    page.watch.allowed.append("status of 415")  # the broken file's answer, on purpose
    files = []
    for n in range(3):
        path = tmp_path / f"new-{n}.png"
        Image.fromarray(np.full((40, 60, 3), 60 * n, dtype=np.uint8)).save(path)
        files.append(path)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    (tmp_path / "note.txt").write_text("a note about a red square", encoding="utf-8")
    files += [tmp_path / "broken.jpg", tmp_path / "note.txt"]
    before = httpx.get(f"{site.url}/v1/collections/{COLLECTION}").json()["count"]
    page.click('button[aria-controls="add-section"]')
    page.set_input_files("#add-files", [str(p) for p in files])
    page.wait_for_selector('#add-summary:has-text("4 of 5 added, 1 failed")', timeout=30_000)
    assert page.eval_on_selector("#add-progress", "p => p.value") == 1
    rows = page.eval_on_selector_all(
        "#uploads li",
        "rows => rows.map(r => [r.querySelector('.name').textContent,"
        " r.querySelector('progress').value, r.querySelector('.status').textContent])",
    )
    by_name = {name: (value, status) for name, value, status in rows}
    assert by_name["new-0.png"] == (1, "added")
    assert by_name["note.txt"] == (1, "added")
    assert by_name["broken.jpg"][1].startswith("unsupported file type")  # the API's words
    after = httpx.get(f"{site.url}/v1/collections/{COLLECTION}").json()["count"]
    assert after == before + 4
    page.wait_for_selector(f'#collection-info:has-text("{after} items")')
    note = httpx.get(f"{site.url}/v1/collections/{COLLECTION}/items/note.txt").json()
    assert note["text"] == "a note about a red square"


def test_a_finetune_job_from_the_form_to_activation_and_back(page: Any, site: Site) -> None:
    page.click('button[aria-controls="jobs-section"]')
    page.wait_for_selector('#versions tbody tr:has-text("(active)")')
    active = httpx.get(f"{site.url}/v1/collections/{COLLECTION}").json()["aligner_version"]
    page.fill("#pair-key", "group")
    page.select_option("#activate", "always")
    page.click('#job-form button[type="submit"]')
    page.wait_for_selector('#job-status:has-text("finetune: succeeded")', timeout=300_000)
    assert page.is_visible("#job-chart")
    assert "before" in page.text_content("#chart-text")
    now = httpx.get(f"{site.url}/v1/collections/{COLLECTION}").json()["aligner_version"]
    assert now > active
    page.wait_for_selector(f'#versions tbody tr:has-text("{now} (active)")')
    # Roll back: the version before is activated again from the table.
    page.click(f'button:has-text("Activate version {active}")')
    page.wait_for_selector(f'#versions tbody tr:has-text("{active} (active)")')
    assert httpx.get(f"{site.url}/v1/collections/{COLLECTION}").json()["aligner_version"] == active


def test_the_key_prompt_comes_and_comes_back_on_a_refused_key(
    chromium: Any, keyed_site: Site
) -> None:
    page = open_page(chromium, keyed_site, expect=("status of 401",))
    try:
        page.goto(keyed_site.url + "/")
        page.wait_for_selector("#key-dialog[open]")
        page.fill("#key-input", "wrong")
        page.press("#key-input", "Enter")
        page.wait_for_selector('#key-reason:has-text("The key was refused")')
        assert page.is_visible("#key-dialog")
        page.fill("#key-input", KEY)
        page.press("#key-input", "Enter")
        page.wait_for_selector("body[data-ready=true]")
        assert not page.is_visible("#key-dialog")
        assert page.input_value("#collection") == COLLECTION
        page.fill("#query", "a circle")
        wait_for_count(page, "for “a circle”")
        assert shown_ids(page) == api_ids(keyed_site, {"text": "a circle", "k": 24})
        # The key lives in this tab only: another tab is asked again.
        other = page.context.new_page()  # the same browser profile: only localStorage shared
        other.goto(keyed_site.url + "/")
        other.wait_for_selector("#key-dialog[open]")
        other.close()
        page.watch.check()
    finally:
        page.context.close()


def test_works_with_the_keyboard_alone(page: Any, site: Site) -> None:
    page.keyboard.press("Tab")  # the skip link first
    assert page.evaluate("document.activeElement.textContent") == "Skip to search"
    page.keyboard.press("Enter")  # ... which takes the focus to the search box
    assert page.evaluate("document.activeElement.id") == "query"
    page.keyboard.type("a yellow triangle")
    wait_for_count(page, "for “a yellow triangle”")
    first = shown_ids(page)[0]
    for _ in range(40):  # on through the form to the first result's button
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('aria-label')") == (
            f"More like {first}"
        ):
            break
    page.keyboard.press("Enter")
    wait_for_count(page, f"items like {first}")


def test_fits_a_phone_width_screen(chromium: Any, site: Site) -> None:
    page = open_page(chromium, site, viewport={"width": 360, "height": 740}, is_mobile=True)
    try:
        page.goto(site.url + "/")
        page.wait_for_selector("body[data-ready=true]")
        page.fill("#query", "a green circle")
        wait_for_count(page, "for “a green circle”")
        for section in ("search-section", "add-section", "jobs-section"):
            page.click(f'button[aria-controls="{section}"]')
            if section == "jobs-section":  # a job's long id and the versions table shown
                page.select_option("#job-type", "reindex")
                page.click('#job-form button[type="submit"]')
                page.wait_for_selector('#job-status:has-text("reindex: succeeded")')
                page.wait_for_selector("#versions tbody tr")
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{section} is {overflow} px wider than the screen"
        page.watch.check()
    finally:
        page.context.close()


@pytest.mark.parametrize("state", ["results", "add items", "jobs", "key prompt"])
def test_no_serious_accessibility_violations(
    chromium: Any, site: Site, keyed_site: Site, axe_source: str, state: str
) -> None:
    """axe-core's scan of each main state: no violation of impact serious or critical. (The
    scan runs as a script the page's own policy would refuse: this context bypasses it.)"""
    where = keyed_site if state == "key prompt" else site
    page = open_page(chromium, where, bypass_csp=True, expect=("status of 401",))
    try:
        page.goto(where.url + "/")
        if state == "key prompt":
            page.wait_for_selector("#key-dialog[open]")
        else:
            page.wait_for_selector("body[data-ready=true]")
            page.fill("#query", "a blue square")
            wait_for_count(page, "for “a blue square”")
        if state == "add items":
            page.click('button[aria-controls="add-section"]')
        if state == "jobs":
            page.click('button[aria-controls="jobs-section"]')
            page.wait_for_selector("#versions tbody tr")
        page.add_script_tag(content=axe_source)
        found = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        serious = [
            (v["id"], v["help"], [n["target"] for n in v["nodes"]][:3])
            for v in found["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert serious == []
    finally:
        page.context.close()


def test_an_upload_refused_as_busy_waits_and_goes_in(page: Any, site: Site, tmp_path: Path) -> None:
    """A 429 (the server's upload budget full) is waited out for its Retry-After, then sent
    again: the file goes in, and the row said it was waiting."""
    page.watch.allowed.append("status of 429")
    path = tmp_path / "later.png"
    Image.fromarray(np.full((30, 30, 3), 200, dtype=np.uint8)).save(path)
    calls: list[float] = []

    def busy_once(route: Any) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            route.fulfill(
                status=429,
                headers={"Retry-After": "2", "Content-Type": "application/json"},
                body='{"error": {"code": "overloaded", "message": "busy"}}',
            )
        else:
            route.continue_()

    page.route(f"{site.url}/v1/collections/{COLLECTION}/items", busy_once)
    page.click('button[aria-controls="add-section"]')
    page.set_input_files("#add-files", [str(path)])
    page.wait_for_selector('#uploads li .status:has-text("server busy, waiting")')
    page.wait_for_selector('#uploads li .status:has-text("added")', timeout=15_000)
    assert len(calls) == 2 and calls[1] - calls[0] >= 1.9  # as long as it said, not 1 s
    got = httpx.get(f"{site.url}/v1/collections/{COLLECTION}/items/later.png")
    assert got.status_code == 200 and got.json()["modality"] == "image"


def test_a_chosen_folder_goes_in_with_its_paths_as_ids(
    page: Any, site: Site, tmp_path: Path
) -> None:
    """Ids are the files' paths within the folder, as ``mmr ingest`` makes them ("/" as %2F):
    the same folder sent again replaces its items."""
    folder = tmp_path / "album"
    (folder / "day one").mkdir(parents=True)
    Image.fromarray(np.full((30, 40, 3), 90, dtype=np.uint8)).save(folder / "day one" / "a.png")
    (folder / "b.txt").write_text("a small green circle", encoding="utf-8")
    page.click('button[aria-controls="add-section"]')
    page.set_input_files("#add-folder", str(folder))
    page.wait_for_selector('#add-summary:has-text("2 of 2 added")', timeout=30_000)
    for item_id in ("album%2Fday one%2Fa.png", "album%2Fb.txt"):
        url = f"{site.url}/v1/collections/{COLLECTION}/items/{quote(item_id, safe='')}"
        assert httpx.get(url).status_code == 200, item_id
    count = httpx.get(f"{site.url}/v1/collections/{COLLECTION}").json()["count"]
    page.set_input_files("#add-folder", str(folder))  # again: the same ids, replaced
    page.wait_for_selector('#add-summary:has-text("4 of 4 added")', timeout=30_000)
    statuses = page.eval_on_selector_all(
        "#uploads li .status", "rows => rows.map(r => r.textContent)"
    )
    assert statuses[-2:] == ["replaced", "replaced"]
    assert httpx.get(f"{site.url}/v1/collections/{COLLECTION}").json()["count"] == count


def test_a_pasted_picture_searches_by_it(page: Any, site: Site) -> None:
    only(page, "image")
    scene = ({"shape": "square", "colour": "red", "size": "large", "position": "center"},)
    red = picture_of(scene, 3)
    page.evaluate(
        """(bytes) => {
            const transfer = new DataTransfer();
            const file = new File([new Uint8Array(bytes)], "pasted.jpg", {type: "image/jpeg"});
            transfer.items.add(file);
            document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: transfer}));
        }""",
        list(red),
    )
    wait_for_count(page, "for the file pasted.jpg")
    expected = httpx.post(
        site.url + SEARCH,
        files={"file": ("pasted.jpg", red, "image/jpeg")},
        data={"k": "24", "modalities": "image"},
        timeout=30,
    ).json()
    assert shown_ids(page) == [hit["item"]["id"] for hit in expected["results"]]


def test_a_reindex_job_from_the_form(page: Any, site: Site) -> None:
    page.click('button[aria-controls="jobs-section"]')
    page.select_option("#job-type", "reindex")
    assert not page.is_visible("#pair-key")
    page.click('#job-form button[type="submit"]')
    page.wait_for_selector('#job-status:has-text("reindex: succeeded")', timeout=120_000)
    assert page.eval_on_selector("#job-progress", "p => p.value") == 1
    jobs = httpx.get(f"{site.url}/v1/jobs", params={"collection": COLLECTION}).json()["jobs"]
    assert jobs[0]["type"] == "reindex" and jobs[0]["status"] == "succeeded"


def test_markup_in_an_items_text_is_shown_as_text(page: Any, site: Site) -> None:
    """A stored text holding HTML is shown as those characters: nothing in it runs or
    loads (the page's check: no request left the host, no error)."""
    markup = '<img src="http://example.invalid/x.png" onerror="document.title=1"><b>bold</b>'
    httpx.post(
        f"{site.url}/v1/collections/{COLLECTION}/items", json={"id": "markup", "text": markup}
    ).raise_for_status()
    only(page, "text")
    page.fill("#filter", "")
    page.fill("#query", markup)
    wait_for_count(page, "results for")
    snippet = page.locator('#results > li[data-id="markup"] .snippet')
    assert snippet.text_content() == markup
    assert snippet.locator("img, b").count() == 0
    assert page.title() == "mmr: search"


def test_finds_duplicates_page_by_page(page: Any, site: Site) -> None:
    """A collection of its own (last in the picker): a picture stored three times and another
    one. The page lists the API's pairs, best first, a page of 24 at a time."""
    name = "zz-duplicates"
    headers = {"Authorization": f"Bearer {site.key}"} if site.key else {}
    httpx.post(
        site.url + "/v1/collections", json={"name": name}, headers=headers
    ).raise_for_status()
    copy = picture_of(
        ({"shape": "circle", "colour": "red", "size": "large", "position": "center"},), seed=5
    )
    other = picture_of(
        ({"shape": "square", "colour": "blue", "size": "small", "position": "left"},), seed=6
    )
    for item, data in (("one", copy), ("two", copy), ("three", copy), ("other", other)):
        stored = httpx.post(
            f"{site.url}/v1/collections/{name}/items",
            files={"file": (f"{item}.jpg", data, "image/jpeg")},
            data={"id": item},
            headers=headers,
            timeout=30,
        )
        stored.raise_for_status()
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.select_option("#collection", name)
    page.click('button.tab[aria-controls="duplicates-section"]')
    page.fill("#threshold", "0.99")
    page.click('#duplicates-form button[type="submit"]')
    page.wait_for_selector('#pair-count:has-text("3 pairs")', timeout=20_000)
    shown = page.eval_on_selector_all("#pairs > li", "l => l.map(i => [i.dataset.a, i.dataset.b])")
    listed = httpx.get(
        f"{site.url}/v1/collections/{name}/duplicates", params={"threshold": 0.99}, headers=headers
    ).json()["pairs"]
    assert shown == [[p["a"], p["b"]] for p in listed]
    assert {tuple(pair) for pair in shown} == {("one", "two"), ("one", "three"), ("two", "three")}
    page.wait_for_selector("#pairs img", timeout=20_000)  # each side's thumbnail
    assert page.is_hidden("#more-pairs")
