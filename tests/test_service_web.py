"""The web page (GET /) end to end: a real uvicorn server on 127.0.0.1, driven in headless
Chromium with Selenium. Also the thumbnail endpoints the page uses, and its Content-Security-Policy.

Works are uploaded through the API: scikit-image's photographs and standard-library docstrings.
The browser tests skip without Chromium, chromedriver or selenium (`./scripts/setup.sh --test`
installs them), and fail instead under FACTOR4_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from PIL import Image

from detector import config
from service.main import create_app
from service.tenancy import Tenancy
from tests.browser import rect, requested_urls
from tests.conftest import REF_IMAGES, REF_TEXT_MODULES, jpeg_bytes, module_doc, skimage_data

#: A work title that would run script or load a picture if the page ever made markup of data.
HOSTILE_TITLE = 'Chelsea <img src="http://198.51.100.7/x.png" onerror="alert(1)"> & "the cat" <script>alert(2)</script>'
# The output picture: motorcycle_left.png (not a work) at 600 x 400 with chelsea.png (a work)
# scaled to 240 x 160 pasted at (320, 80).
OUTPUT_SIZE = (600, 400)
PASTE_BOX = (320, 80, 560, 240)
WAIT = 180  # seconds a scan may take on a loaded machine (the first one per modality calibrates)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """factor4's app under uvicorn in a thread, on a free port; tenant alice's private collection
    'art' holds four photographs and five docstrings; bob has a key and no collections."""
    home = tmp_path_factory.mktemp("web")
    tenancy = Tenancy(home)
    keys = {"alice": tenancy.create_key("alice").key, "bob": tenancy.create_key("bob").key}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv = uvicorn.Server(uvicorn.Config(create_app(home=str(home)), log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not srv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        data = skimage_data()
        files = [("file", (name, (data / name).read_bytes())) for name in REF_IMAGES]
        files += [("file", (f"{m}.txt", module_doc(m).encode())) for m in REF_TEXT_MODULES]
        meta = {"chelsea.png": {"title": HOSTILE_TITLE, "creator": "scikit-image"}}
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {keys['alice']}"}, timeout=600) as c:
            r = c.post("/collections", json={"name": "art"})
            assert r.status_code == 201, r.text
            r = c.post("/collections/art/works", files=files, data={"meta": json.dumps(meta)})
            assert r.status_code == 201, r.text
            works = {w["source"]: w for w in r.json()["added"]}
        assert len(works) == len(files)
        yield {"base": base, "keys": keys, "works": works, "home": home}
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()


def _client(server: dict[str, Any], who: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server['keys'][who]}"} if who else {}
    return httpx.Client(base_url=server["base"], headers=headers, timeout=600)


@pytest.fixture(scope="module")
def composite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = skimage_data()
    out = Image.open(data / "motorcycle_left.png").convert("RGB").resize(OUTPUT_SIZE)
    left, top, right, bottom = PASTE_BOX
    out.paste(Image.open(data / "chelsea.png").convert("RGB").resize((right - left, bottom - top)), (left, top))
    path = tmp_path_factory.mktemp("outputs") / "composite.jpg"
    path.write_bytes(jpeg_bytes(out, 85))
    return path


# -- HTTP: the page and the thumbnails ---------------------------------------------------------

def test_page_is_served_with_a_strict_policy(server: dict[str, Any]) -> None:
    with _client(server, None) as c:
        r = c.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp and "img-src 'self' data: blob:" in csp
    assert "unsafe" not in csp and "frame-ancestors 'none'" in csp
    page = r.text
    [script] = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp
    assert "http://" not in page and "https://" not in page and "innerHTML" not in page
    assert "api key" in page.lower()  # the page holds no data: just the form


def test_thumbnails_owner_public_and_errors(server: dict[str, Any]) -> None:
    chelsea = server["works"]["chelsea.png"]["id"]
    csv = server["works"]["csv.txt"]["id"]
    own = f"/collections/art/works/{chelsea}/thumbnail"
    pub = f"/public/alice/art/works/{chelsea}/thumbnail"
    with _client(server, "alice") as alice, _client(server, "bob") as bob, _client(server, None) as anon:
        r = alice.get(own)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(r.content)) as im:
            assert im.format == "JPEG" and max(im.size) <= config.THUMBNAIL_SIDE and im.size[0] > im.size[1]
        thumb = r.content
        sha = server["works"]["chelsea.png"]["sha256"]
        assert alice.get(f"/collections/art/works/{sha}/thumbnail").content == thumb  # by sha256 too
        assert alice.get(pub).content == thumb  # the owner may use the public URL as well
        for client, url, status, code in [
            (anon, own, 401, "unauthorized"),
            (alice, f"/collections/art/works/{csv}/thumbnail", 404, "no_thumbnail"),
            (alice, "/collections/art/works/0000000000000000/thumbnail", 404, "work_not_found"),
            (alice, f"/collections/nope/works/{chelsea}/thumbnail", 404, "collection_not_found"),
            (bob, own, 404, "collection_not_found"),  # bob's own 'art' does not exist
            (bob, pub, 404, "collection_not_found"),  # alice's 'art' is private
        ]:
            r = client.get(url)
            assert (r.status_code, r.json()["error"]) == (status, code), (url, r.text)
        assert alice.patch("/collections/art", json={"public": True}).status_code == 200
        try:
            r = bob.get(pub)
            assert r.status_code == 200 and r.content == thumb
        finally:
            assert alice.patch("/collections/art", json={"public": False}).status_code == 200
        assert bob.get(pub).status_code == 404


# -- headless Chromium -------------------------------------------------------------------------

def _wait(driver: Any, condition: Any, what: str, timeout: float = WAIT) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, f"timed out waiting for {what}")


def _by(css: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    return (By.CSS_SELECTOR, css)


def _visible(driver: Any, css: str) -> bool:
    return any(e.is_displayed() for e in driver.find_elements(*_by(css)))


def _sign_in(driver: Any, key: str) -> None:
    field = driver.find_element(*_by("#key"))
    field.clear()
    field.send_keys(key)
    driver.find_element(*_by("#signin-button")).click()


def _scanned(driver: Any) -> Any:
    """The first match once a scan has finished (fails the test with the page's message if it
    failed)."""
    state = _wait(driver, lambda d: d.find_element(*_by("#results")).get_attribute("data-state") in ("done", "error")
                  and d.find_element(*_by("#results")).get_attribute("data-state"), "the scan")
    assert state == "done", driver.find_element(*_by("#message")).get_attribute("textContent")
    return driver.find_element(*_by("#matches .match"))


def _choose(driver: Any, name: str) -> None:
    from selenium.webdriver.support.ui import Select

    select = Select(driver.find_element(*_by("#collection")))
    [option] = [o for o in select.options if o.get_attribute("data-name") == name]
    select.select_by_value(option.get_attribute("value"))


def _text_of(driver: Any, element: Any) -> str:
    """Exact text content (Selenium's .text normalises white space)."""
    return driver.execute_script("return arguments[0].textContent", element)


def _check_box(driver: Any, frame_img: Any, box_el: Any, region: dict[str, int], size: list[int]) -> None:
    """The drawn box sits where *region* (pixels of a *size* picture) falls on the shown image."""
    img, box = rect(driver, frame_img), rect(driver, box_el)
    sx, sy = img["width"] / size[0], img["height"] / size[1]
    for side, px, origin, scale in [("left", region["left"], img["left"], sx), ("right", region["right"], img["left"], sx),
                                    ("top", region["top"], img["top"], sy), ("bottom", region["bottom"], img["top"], sy)]:
        assert abs(box[side] - (origin + px * scale)) <= 2, (side, box, img, region)


def test_sign_in_choose_and_scan_in_chromium(browser: Any, server: dict[str, Any], composite: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    started = time.perf_counter()
    base, alice = server["base"], server["keys"]["alice"]
    browser.get_log("performance")  # drop what earlier pages logged
    browser.get_log("browser")
    browser.get(base + "/")
    assert browser.title.startswith("factor4")
    assert browser.find_element(*_by("label[for=key]")).text == "API key"
    assert not _visible(browser, "#scan") and not _visible(browser, "#message")

    # a wrong key: a visible error, nothing stored, no way to scan
    _sign_in(browser, "f4_0000000000_not-a-real-secret")
    _wait(browser, lambda d: _visible(d, "#message"), "the sign-in error", 30)
    message = browser.find_element(*_by("#message")).text
    assert "401" in message and "valid API key" in message, message
    assert not _visible(browser, "#scan")
    assert browser.execute_script("return sessionStorage.length + localStorage.length") == 0

    # the right key: the collection is listed; the key is kept for this tab only
    _sign_in(browser, alice)
    _wait(browser, lambda d: _visible(d, "#collection"), "the collections", 30)
    assert not _visible(browser, "#message")
    assert browser.execute_script("return sessionStorage.getItem('factor4.key')") == alice
    assert browser.execute_script("return localStorage.length") == 0
    assert browser.find_element(*_by("#key")).get_attribute("value") == ""
    assert "art" in browser.find_element(*_by("#collection")).text
    browser.refresh()  # still signed in after a reload (sessionStorage)
    _wait(browser, lambda d: _visible(d, "#collection"), "the collections after a reload", 30)
    _choose(browser, "art")

    # an image: the pasted cat is found, its region boxed on the output, the work's thumbnail beside it
    browser.find_element(*_by("#file")).send_keys(str(composite))
    match = _scanned(browser)
    assert match.get_attribute("data-verdict") == "copy"
    assert match.get_attribute("data-work-id") == server["works"]["chelsea.png"]["id"]
    assert match.find_element(*_by(".title")).text == HOSTILE_TITLE  # shown as text, not markup
    assert float(match.find_element(*_by(".score")).text) >= 0.7
    assert re.fullmatch(r"\d+(\.\d+)? %", match.find_element(*_by(".fpr")).text)
    assert match.find_element(*_by(".verdict")).text.lower() == "copy"
    out_img = match.find_element(*_by(".output-figure img"))
    _wait(browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", out_img),
          "the output picture", 30)
    assert browser.execute_script("return arguments[0].naturalWidth", out_img) == OUTPUT_SIZE[0]
    box = match.find_element(*_by(".output-figure .region"))
    assert box.is_displayed()
    with _client(server, "alice") as c:  # the same scan through the API: what the box must show
        api = c.post("/collections/art/scan", files={"file": ("composite.jpg", composite.read_bytes())}).json()
    best = api["matches"][0]
    _check_box(browser, out_img, box, best["region"], best["output_size"])
    # plausible: the box holds the pasted picture's centre and overlaps most of it
    o, b = rect(browser, out_img), rect(browser, box)
    sx = o["width"] / OUTPUT_SIZE[0]
    cx, cy = o["left"] + sx * (PASTE_BOX[0] + PASTE_BOX[2]) / 2, o["top"] + sx * (PASTE_BOX[1] + PASTE_BOX[3]) / 2
    assert b["left"] < cx < b["right"] and b["top"] < cy < b["bottom"], (b, cx, cy)
    paste = [o["left"] + sx * PASTE_BOX[0], o["top"] + sx * PASTE_BOX[1], o["left"] + sx * PASTE_BOX[2],
             o["top"] + sx * PASTE_BOX[3]]
    inter = max(0, min(b["right"], paste[2]) - max(b["left"], paste[0])) * max(
        0, min(b["bottom"], paste[3]) - max(b["top"], paste[1]))
    assert inter / ((paste[2] - paste[0]) * (paste[3] - paste[1])) > 0.6
    work_img = match.find_element(*_by(".work-figure img"))
    _wait(browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0",
                                              work_img), "the work's thumbnail", 30)
    assert work_img.is_displayed() and work_img.get_attribute("src").startswith("blob:")
    if best["work_region"] is not None:
        _check_box(browser, work_img, match.find_element(*_by(".work-figure .region")), best["work_region"],
                   best["work_size"])
    else:
        assert not match.find_elements(*_by(".work-figure .region"))
    assert rect(browser, out_img)["right"] <= rect(browser, work_img)["left"]  # side by side
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - raises when no alert() ran
    srcs = browser.execute_script("return Array.from(document.images).map(i => i.src).filter(s => s)")
    assert srcs and all(s.startswith("blob:") for s in srcs), srcs  # only the pictures the page fetched

    # a text quoting the csv module's docstring: spans marked in it and in the work
    doc = module_doc("csv")
    quoted = " ".join(doc.split()[:120])
    text = "As the documentation puts it: " + quoted + " That is all I know."
    field = browser.find_element(*_by("#text"))
    field.clear()
    field.send_keys(text)
    browser.find_element(*_by("#scan-text")).click()
    match = _scanned(browser)
    assert match.find_element(*_by(".title")).text == "csv" and match.get_attribute("data-verdict") == "copy"
    assert re.fullmatch(r"\d+(\.\d+)? %", match.find_element(*_by(".fpr")).text)
    body = match.find_element(*_by(".output-text .text-body"))
    assert _text_of(browser, body) == text  # the whole output, marks in place
    marks = [_text_of(browser, m) for m in body.find_elements(*_by("mark"))]
    assert marks and all(m in text for m in marks)
    assert sum(len(m) for m in marks) > 0.8 * len(quoted)
    flat_doc = " ".join(doc.split())
    work_marks = [_text_of(browser, m) for m in match.find_elements(*_by(".work-text mark"))]
    assert work_marks and all(" ".join(m.split()) in flat_doc for m in work_marks)
    assert not match.find_elements(*_by(".output-figure"))

    # nothing left 127.0.0.1, and the page ran clean under its policy
    requested = requested_urls(browser)
    assert {base + "/", base + "/collections", base + "/collections/art/scan"} <= set(requested), requested
    assert any(u.endswith("/thumbnail") for u in requested), requested
    outside = [u for u in requested if not u.startswith((base + "/", "blob:", "data:"))]
    assert not outside, f"the page requested {outside}"
    problems = [e["message"] for e in browser.get_log("browser")
                if e["level"] in ("SEVERE", "WARNING") and "status of 401" not in e["message"]]
    assert not problems, problems

    # signing out forgets the key
    browser.find_element(*_by("#signout-button")).click()
    assert browser.execute_script("return sessionStorage.length") == 0
    assert _visible(browser, "#key") and not _visible(browser, "#scan")
    print(f"web page flow in Chromium: {time.perf_counter() - started:.1f} s")


def test_public_collection_in_chromium(browser: Any, server: dict[str, Any], composite: Path) -> None:
    """Bob scans alice's public collection: it is listed as alice/art, and the matched work's
    thumbnail comes through the public URL."""
    base = server["base"]
    with _client(server, "alice") as alice:
        assert alice.patch("/collections/art", json={"public": True}).status_code == 200
        try:
            browser.get(base + "/")
            browser.execute_script("sessionStorage.clear()")
            browser.get_log("performance")
            _sign_in(browser, server["keys"]["bob"])
            _wait(browser, lambda d: _visible(d, "#collection"), "bob's collections", 30)
            _choose(browser, "alice/art")
            browser.find_element(*_by("#file")).send_keys(str(composite))
            match = _scanned(browser)
            assert match.get_attribute("data-verdict") == "copy"
            work_img = match.find_element(*_by(".work-figure img"))
            _wait(browser, lambda d: d.execute_script("return arguments[0].naturalWidth > 0", work_img),
                  "the public work's thumbnail", 30)
        finally:
            assert alice.patch("/collections/art", json={"public": False}).status_code == 200
    chelsea = server["works"]["chelsea.png"]["id"]
    requested = requested_urls(browser)
    assert f"{base}/public/alice/art/scan" in requested
    assert f"{base}/public/alice/art/works/{chelsea}/thumbnail" in requested
