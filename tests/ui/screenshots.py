"""The docs' pictures of the search page: ``python -m tests.ui.screenshots [FOLDER]`` starts a
server on mmr-mini with the demo collection, works the page in headless Chromium and saves
its main states as PNGs (default ``docs/images``)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright

from tests.app.test_crash import serve
from tests.ui.conftest import _env
from tests.ui.demo import seed


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mmr-shots-"))
    uploads = []
    for n in range(4):
        path = work / f"holiday-{n}.png"
        Image.fromarray(np.full((40, 60, 3), 50 * n + 40, dtype=np.uint8)).save(path)
        uploads.append(str(path))
    (work / "notes.txt").write_text("a large red square", encoding="utf-8")
    (work / "broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    uploads += [str(work / "notes.txt"), str(work / "broken.jpg")]
    with serve(_env(work / "data"), work / "server.log") as server:
        seed(server.url)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"), args=["--no-sandbox"]
            )
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.goto(server.url + "/")
            page.wait_for_selector("body[data-ready=true]")
            page.fill("#query", "a red square")
            page.wait_for_selector('#result-count:has-text("results for")')
            page.wait_for_timeout(1500)  # the thumbnails
            page.screenshot(path=str(out / "ui-search.png"))
            page.click('button[aria-controls="add-section"]')
            page.set_input_files("#add-files", uploads)
            page.wait_for_selector('#add-summary:has-text("5 of 6 added, 1 failed")')
            page.screenshot(path=str(out / "ui-add.png"))
            page.click('button[aria-controls="jobs-section"]')
            page.fill("#pair-key", "group")
            page.click('#job-form button[type="submit"]')
            page.wait_for_selector('#job-status:has-text("succeeded")', timeout=300_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "ui-jobs.png"), full_page=True)
            phone = browser.new_page(viewport={"width": 390, "height": 760}, is_mobile=True)
            phone.goto(server.url + "/")
            phone.wait_for_selector("body[data-ready=true]")
            phone.fill("#query", "a sound of beeps")
            phone.wait_for_selector('#result-count:has-text("results for")')
            phone.wait_for_timeout(1500)
            phone.screenshot(path=str(out / "ui-phone.png"))
            browser.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/images"))
