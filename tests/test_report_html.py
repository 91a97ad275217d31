"""report.html: structure, escaping and self-containment, checked in Python and in a real
headless Chromium (Selenium).

The report dict is built here in the shape `detector.report.build_report` gives; the pictures
are scikit-image's bundled photographs and the text work is a standard-library docstring. The
browser tests skip when Chromium, chromedriver or selenium are missing
(`./scripts/setup.sh --test` installs them).
"""

from __future__ import annotations

import base64
import copy
import io
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from detector import config
from detector.report_html import SKIPPED_SHOWN, render_html

from .browser import rect, requested_urls
from .conftest import module_doc, skimage_data

HOSTILE = "<script>alert(1)</script> \"double\" 'single' & <b>bold</b>"
HOSTILE_SPAN = '</td></tr></table><script>alert(2)</script><img src="http://127.0.0.1:9/x.png" onerror="alert(3)">'
EXTERNAL_ATTR = re.compile(r"""\b(?:src|href|xlink:href|action|poster|srcset)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)

# The output picture: coffee.png (600 x 400) with chelsea.png scaled to 240 x 160 pasted at (320, 80).
OUTPUT_SIZE = (600, 400)
PASTE_BOX = (320, 80, 560, 240)


def _jpeg(img: Image.Image, side: int = config.THUMBNAIL_SIDE) -> bytes:
    img = img.convert("RGB")
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _rate(k: int, n: int) -> dict[str, Any]:
    from detector.report import rate

    return rate(k, n)


def _pictures() -> tuple[dict[str, bytes], tuple[int, int]]:
    data = skimage_data()
    work = Image.open(data / "chelsea.png").convert("RGB")
    output = Image.open(data / "coffee.png").convert("RGB")
    if output.size != OUTPUT_SIZE:
        output = output.resize(OUTPUT_SIZE)
    left, top, right, bottom = PASTE_BOX
    output.paste(work.resize((right - left, bottom - top)), (left, top))
    return {"work:img0001": _jpeg(work), "output:2": _jpeg(output)}, work.size


def _text_spans() -> tuple[str, str, list[dict[str, Any]]]:
    """A work text (the csv module's docstring), an output quoting one passage verbatim and another
    with words replaced, and the two spans as the scanner reports them."""
    work_text = module_doc("csv")
    words = list(re.finditer(r"\S+", work_text))
    if len(words) < 120:
        pytest.skip("csv's docstring is unexpectedly short")
    v0, v1 = words[4].start(), words[28].end()
    n0, n1 = words[74].start(), words[104].end()
    verbatim = work_text[v0:v1]
    near_src = work_text[n0:n1]
    replaced = list(re.finditer(r"\w+", near_src))
    a, b = replaced[3], replaced[9]
    near_out = near_src[: a.start()] + "ZEBRA" + near_src[a.end() : b.start()] + "QUOKKA" + near_src[b.end() :]
    prefix = "Here is the answer you asked for. "
    middle = "\n\nAnd, further on: "
    output_text = prefix + verbatim + middle + near_out + " That is all."
    o_v0 = len(prefix)
    o_n0 = o_v0 + len(verbatim) + len(middle)
    spans = [
        {"output_start": o_v0, "output_end": o_v0 + len(verbatim), "work_start": v0, "work_end": v1,
         "kind": "verbatim", "words": len(verbatim.split()), "discounted": False,
         "output_text": verbatim, "work_text": verbatim},
        {"output_start": o_n0, "output_end": o_n0 + len(near_out), "work_start": n0, "work_end": n1,
         "kind": "near", "words": len(near_out.split()), "discounted": False,
         "output_text": near_out, "work_text": near_src},
        {"output_start": 0, "output_end": 10, "work_start": 5, "work_end": 15, "kind": "verbatim",
         "words": 3, "discounted": True, "shared_by": 4, "output_text": "Here is the", "work_text": "Here is the"},
    ]
    return output_text, verbatim, spans


def make_report(title: str = "Chelsea the cat", span_text: str | None = None,
                work_id: str = "img0001") -> tuple[dict[str, Any], dict[str, bytes]]:
    """A small report: one image work (2 examples, one without a picture), one text work
    (verbatim, near and a discounted span), a skipped line."""
    images, work_size = _pictures()
    if work_id != "img0001":
        images[f"work:{work_id}"] = images.pop("work:img0001")
    output_text, verbatim, spans = _text_spans()
    if span_text is not None:
        spans[0] = dict(spans[0], output_text=span_text, work_text=span_text)
    left, top, right, bottom = PASTE_BOX
    image_work = {"id": work_id, "title": title, "sha256": "a" * 64, "source": "works/chelsea.png",
                  "creator": "scikit-image", "modality": "image"}
    text_work = {"id": "txt0002", "title": "csv module docs", "sha256": "b" * 64, "source": "works/csv.txt",
                 "creator": None, "modality": "text"}
    image_match = {
        "work": image_work, "score": 0.91, "verdict": "copy", "fpr": 0.0033, "fpr_upper": 0.0099, "null_size": 300,
        "reason": "sscd_normalised 0.500: beyond 300 of 300 unrelated outputs",
        "signals": {"sscd": 0.41, "sscd_normalised": 0.5, "pdq_distance": 117.0},
        "region": {"left": left, "top": top, "right": right, "bottom": bottom},
        "output_size": list(OUTPUT_SIZE), "work_region": None, "work_size": list(work_size),
        "transform": "partial",
    }
    image_match2 = {
        "work": image_work, "score": 0.55, "verdict": "similar", "fpr": None,
        "signals": {"sscd": 0.3, "sscd_normalised": 0.25, "pdq_distance": None},
        "region": {"left": 10, "top": 20, "right": 900, "bottom": 700}, "work_region": None,
        "transform": "edited",
    }
    text_match = {
        "work": text_work, "score": 0.96, "verdict": "copy", "fpr": 0.004,
        "signals": {"minilm": 0.93, "copied_words": 55, "aligned_words": 55, "coverage": 0.8,
                    "longest_run_words": 25},
        "coverage": 0.8, "longest_run_words": 25, "spans": spans, "excerpt": verbatim,
    }
    report = {
        "schema": "factor4-report/1",
        "summary": {"inputs": 9, "scanned": {"image": 4, "text": 4}, "skipped": 1, "outputs_with_copy": 2,
                    "outputs_with_similar_only": 1, "works_matched": 2,
                    "thresholds": {"copy": 0.7, "similar": 0.4},
                    "levels": {"image": {"copy": 0.01, "similar": 0.05}}},
        "groups": {"prompt_type": {"realistic": {"image": 2, "text": 2}, "adversarial": {"image": 2, "text": 2}},
                   "generator": {"imagegen 2.1": {"image": 4}, "textgen": {"text": 4}}},
        "works": [
            {"work": image_work, "copy": _rate(1, 4), "copy_or_similar": _rate(2, 4),
             "by_prompt_type": {"adversarial": {"copy": _rate(1, 2), "copy_or_similar": _rate(1, 2)},
                                "realistic": {"copy": _rate(0, 2), "copy_or_similar": _rate(1, 2)}},
             "by_generator": {"imagegen 2.1": {"copy": _rate(1, 4), "copy_or_similar": _rate(2, 4)}},
             "examples": [
                 {"line": 2, "id": "out-2", "sha256": "c" * 64, "input": "outputs/0002.jpg", "match": image_match},
                 {"line": 3, "id": "out-3", "sha256": "d" * 64, "input": "outputs/0003.jpg", "match": image_match2},
             ]},
            {"work": text_work, "copy": _rate(1, 4), "copy_or_similar": _rate(1, 4),
             "by_prompt_type": {"adversarial": {"copy": _rate(1, 2), "copy_or_similar": _rate(1, 2)}},
             "by_generator": {"textgen": {"copy": _rate(1, 4), "copy_or_similar": _rate(1, 4)}},
             "examples": [{"line": 6, "id": "out-6", "sha256": "e" * 64, "input": output_text[:40],
                           "encoding": "cp1252", "match": text_match}]},
        ],
        "distributions": {
            "image": {"bins": 25, "best_match": [0, 1, 1, 0] + [0] * 9 + [1] + [0] * 8 + [1, 0, 0],
                      "unrelated": [5, 40, 80, 60, 30, 10, 4, 1] + [0] * 17,
                      "calibration": {"modality": "image", "generation": 3, "queries": 230, "works": 4,
                                      "method": "thumbnails as they are, cropped, composited",
                                      "makeup": [["as is", 100], ["cropped", 130]], "copy_level": 0.01,
                                      "similar_level": 0.05, "left_out": ["neg.png: copy of Chelsea"]},
                      "reliability": [{"stated": 0.01, "measured": 0.008, "outputs": 230},
                                      {"stated": 0.1, "measured": 0.3, "outputs": 230}]},
            "text": {"bins": 25, "best_match": [2, 1] + [0] * 21 + [0, 1],
                     "unrelated": [30, 90, 60, 20, 5] + [0] * 20, "calibration": None},
        },
        "skipped": [{"line": 5, "id": "out-5", "reason": "outputs/0005.png: file not found"}],
        "collection": {"name": "demo-art", "generation": 3,
                       "manifest": {"format": 1, "channels": [{"name": "sscd"}]}, "manifest_sha256": "f" * 64,
                       "works": [{"id": work_id, "sha256": "a" * 64, "title": title, "modality": "image"},
                                 {"id": "txt0002", "sha256": "b" * 64, "title": "csv module docs",
                                  "modality": "text"}]},
        "provenance": {"factor4": "0.1.0", "python": "3.12.3", "platform": "Linux-test", "packages": {"numpy": "2.0"},
                       "encoders": [{"channel": "sscd", "encoder": "sscd", "modality": "image", "dim": 512,
                                     "weights_sha256": "9" * 64},
                                    {"channel": "shingles", "encoder": "shingles", "modality": "text", "dim": 0,
                                     "weights_sha256": None}],
                       "signal_thresholds": {k: list(v) for k, v in config.SIGNAL_THRESHOLDS.items()},
                       "command": ["factor4", "batch", "demo-art", "outputs.jsonl", "--report", "out dir"],
                       "started_utc": "2026-10-01T09:00:00Z", "finished_utc": "2026-10-01T09:05:00Z"},
        "files": {"inputs.jsonl": "1" * 64, "results.jsonl": "2" * 64},
    }
    return report, images


# -- pure Python ----------------------------------------------------------------------------


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Tags:
    p = _Tags()
    p.feed(page)
    p.close()
    return p


def test_structure_and_no_external_urls() -> None:
    report, images = make_report()
    page = render_html(report, images)
    assert page == render_html(copy.deepcopy(report), dict(images)), "rendering must be deterministic"
    tags = _parse(page)
    ids = {a.get("id") for _, a in tags.tags}
    assert {"summary", "works", "plots", "pairs", "skipped", "provenance"} <= ids
    for tag, attrs in tags.tags:
        for name in ("src", "href", "xlink:href", "action", "srcset", "poster"):
            value = (attrs.get(name) or "").strip()
            if value:
                assert value.startswith(("data:", "#")), f"<{tag} {name}={value[:60]!r}> leaves the page"
    assert not EXTERNAL_ATTR.search(page)
    assert "http://" not in page and "https://" not in page
    assert "url(" not in page and "@import" not in page
    assert not any(tag in ("script", "iframe", "object", "embed", "link") and attrs.get("rel") != "icon"
                   for tag, attrs in tags.tags)
    pairs = [a for t, a in tags.tags if "pair" in (a.get("class") or "").split()]
    assert [p["data-work-id"] for p in pairs] == ["img0001", "img0001", "txt0002"]
    rows = [a["data-work-id"] for t, a in tags.tags if t == "tr" and "data-work-id" in a]
    assert rows == ["img0001", "txt0002"]
    imgs = [a for t, a in tags.tags if t == "img"]
    assert len(imgs) == 3  # the first image pair's two thumbnails, the second pair's work thumbnail
    for a in imgs:
        head, b64 = a["src"].split(",", 1)
        assert head == "data:image/jpeg;base64"
        assert Image.open(io.BytesIO(base64.b64decode(b64))).size[0] > 0
    assert sum("region" in (a.get("class") or "").split() for _, a in tags.tags) == 1
    text = "".join(tags.text)
    assert "Picture unavailable" in text  # line 3 has no output thumbnail
    assert "picture size unknown: not drawn" in text  # and its region has no output_size
    assert "0.33\u00a0%" in text and "not calibrated" in text
    assert "shared by 4 works" in text
    assert "Output decoded ascp1252 (span offsets count its characters)" in text  # a legacy-encoded output
    assert text.count("Output decoded as") == 1  # the images (encoding absent) have no such row
    assert "The digest in DIGEST covers inputs.jsonl, results.jsonl, report.json and report.html" in text
    assert sum(t == "svg" for t, _ in tags.tags) == 4  # rates + one histogram per modality + reliability
    assert "from 300 unrelated outputs" in text and "beyond 300 of 300" in text  # the rate, its n and why
    assert "Unrelated outputs (null size)230" in text and "100 as is, 130 cropped" in text
    assert "neg.png: copy of Chelsea" in text
    assert "stated 10.0\u00a0%: measured 30.0\u00a0%" in text  # the reliability plot, also as text
    assert page.encode("utf-8")


def test_hostile_strings_are_escaped() -> None:
    report, images = make_report(title=HOSTILE, span_text=HOSTILE_SPAN, work_id='x" onmouseover="alert(4)')
    report["skipped"][0]["reason"] = '<iframe src="https://example.invalid/"></iframe>'
    report["collection"]["name"] = "</title><script>alert(5)</script>"
    report["works"][1]["examples"][0]["match"]["spans"][1]["kind"] = '"><script>alert(6)</script>'
    report["provenance"]["command"] = ["factor4", "<script>alert(7)</script>"]
    page = render_html(report, images)
    tags = _parse(page)
    assert not any(t in ("script", "iframe", "b") for t, _ in tags.tags)
    assert not any(k.startswith("on") for _, a in tags.tags for k in a)
    assert "<script" not in page.lower()
    text = "".join(tags.text)
    assert HOSTILE in text and HOSTILE_SPAN in text
    assert '<iframe src="https://example.invalid/"></iframe>' in text
    assert next(a["data-work-id"] for t, a in tags.tags if t == "tr" and "data-work-id" in a) == \
        'x" onmouseover="alert(4)'


def test_bounds_and_notes(monkeypatch: pytest.MonkeyPatch) -> None:
    report, images = make_report()
    monkeypatch.setattr(config, "REPORT_WORKS_SHOWN", 1)
    report["skipped"] = [{"line": i, "reason": f"broken line {i}"} for i in range(SKIPPED_SHOWN + 7)]
    page = render_html(report, images)
    tags = _parse(page)
    text = "".join(tags.text)
    assert "1 more in report.json" in text
    assert "7 more in report.json" in text
    assert sum(t == "tr" and "data-work-id" in a for t, a in tags.tags) == 1
    assert [a["data-work-id"] for t, a in tags.tags if "pair" in (a.get("class") or "").split()] == ["img0001"] * 2
    assert text.count("broken line") == SKIPPED_SHOWN


def test_degenerate_inputs() -> None:
    page = render_html({}, {})
    assert "<main>" in page and 'id="provenance"' in page
    with pytest.raises(TypeError, match="report dict"):
        render_html([], {})  # type: ignore[arg-type]
    report, _images = make_report(title="lone \ud800 surrogate\x00")
    page = render_html(report, {"work:img0001": b"not a jpeg"})
    assert "lone \ufffd surrogate\ufffd" in page
    page.encode("utf-8")
    tags = _parse(page)
    assert not any(t == "img" for t, _ in tags.tags)  # an undecodable thumbnail is not embedded
    assert "".join(tags.text).count("Picture unavailable") == 4
    report, images = make_report()
    report["works"][0]["examples"][0]["match"]["region"]["right"] = 900  # beyond output_size's 600
    text = "".join(_parse(render_html(report, images)).text)
    assert "x 320\u2013900, y 80\u2013240 px (outside the 600 \u00d7 400 picture: not drawn)" in text
    assert 'class="region"' not in render_html(report, images)


# -- headless Chromium ------------------------------------------------------------------------


def _open(driver: Any, path: Path) -> None:
    driver.get_log("performance")  # drop what earlier pages logged
    driver.get_log("browser")
    driver.get(path.as_uri())
    driver.execute_script("return document.readyState")


def _assert_self_contained(driver: Any, page_url: str) -> None:
    requested = requested_urls(driver)
    assert page_url in requested, f"the network log did not record the page itself: {requested}"
    outside = [u for u in requested if u != page_url and not u.startswith("data:")]
    assert not outside, f"the page requested {outside}"
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith("data:") for u in resources), resources
    problems = [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not problems, problems


def test_report_renders_in_chromium(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    started = time.perf_counter()
    report, images = make_report()
    page = render_html(report, images)
    assert not EXTERNAL_ATTR.search(page)
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    _open(browser, path)
    _assert_self_contained(browser, path.as_uri())

    assert "demo-art" in browser.title
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Evidence report")
    summary = browser.find_element(By.ID, "summary").text
    for needle in ("Outputs scanned: image 4", "Outputs scanned: text 4", "Skipped (why) 1",
                   "Outputs with a copy (false-positive rate \u2264 1.0 % (95 % upper bound)) 2 (25.0 % of scanned)", "2 of 2 in the collection"):
        assert needle in summary, (needle, summary)

    rows = {r.get_attribute("data-work-id"): r.text
            for r in browser.find_elements(By.CSS_SELECTOR, "#works tr[data-work-id]")}
    assert set(rows) == {"img0001", "txt0002"}
    assert "Chelsea the cat" in rows["img0001"] and "1 / 4" in rows["img0001"]
    assert "25.0 %" in rows["img0001"] and "50.0 %" in rows["img0001"]  # copy, copy or similar
    assert "csv module docs" in rows["txt0002"] and "25.0 %" in rows["txt0002"]
    assert "adversarial: 1/2 = 50.0 % [9.5–90.5 %] · or similar 1/2" in rows["img0001"]

    pairs = browser.find_elements(By.CSS_SELECTOR, ".pair")
    assert [p.get_attribute("data-work-id") for p in pairs] == ["img0001", "img0001", "txt0002"]

    first = pairs[0]
    imgs = first.find_elements(By.TAG_NAME, "img")
    assert len(imgs) == 2
    for img in imgs:
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
    out_img = first.find_element(By.CSS_SELECTOR, "figure.output img")
    region = first.find_element(By.CSS_SELECTOR, "figure.output .region")
    r, o = rect(browser, region), rect(browser, out_img)
    assert r["width"] > 0 and r["height"] > 0
    assert o["left"] - 1 <= r["left"] and r["right"] <= o["right"] + 1
    assert o["top"] - 1 <= r["top"] and r["bottom"] <= o["bottom"] + 1
    left, top, right, bottom = PASTE_BOX
    assert (r["left"] - o["left"]) / o["width"] == pytest.approx(left / OUTPUT_SIZE[0], abs=0.02)
    assert (r["top"] - o["top"]) / o["height"] == pytest.approx(top / OUTPUT_SIZE[1], abs=0.02)
    assert r["width"] / o["width"] == pytest.approx((right - left) / OUTPUT_SIZE[0], abs=0.02)
    assert r["height"] / o["height"] == pytest.approx((bottom - top) / OUTPUT_SIZE[1], abs=0.02)
    assert not first.find_elements(By.CSS_SELECTOR, "figure.work .region")  # work_region is null
    facts = first.find_element(By.CSS_SELECTOR, "dl.facts").text
    assert "0.910" in facts and "COPY" in facts.upper() and "partial" in facts and "0.33 %" in facts

    second = pairs[1]
    assert "Picture unavailable" in second.text
    assert "x 10\u2013900, y 20\u2013700 px (picture size unknown: not drawn)" in second.text
    assert "not calibrated" in second.text

    _, verbatim, _ = _text_spans()
    text_pair = pairs[2]
    marks = text_pair.find_elements(By.CSS_SELECTOR, "mark.verbatim")
    assert [m.text for m in marks] == [verbatim, verbatim]  # output side, work side
    near = " ".join(m.text for m in text_pair.find_elements(By.CSS_SELECTOR, "mark.near"))
    assert near and "ZEBRA" not in near and "QUOKKA" not in near
    assert "ZEBRA" in text_pair.text
    assert text_pair.find_elements(By.CSS_SELECTOR, "tr.discounted mark.discounted")
    assert "shared by 4 works" in text_pair.text

    assert len(browser.find_elements(By.CSS_SELECTOR, "#works svg")) == 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#works svg g[data-row]")) == 2
    hists = browser.find_elements(By.CSS_SELECTOR, "#plots svg")
    assert len(hists) == 2
    for svg in hists:
        assert rect(browser, svg)["width"] > 200
        assert svg.find_elements(By.CSS_SELECTOR, "path.null")
    [reliability] = browser.find_elements(By.CSS_SELECTOR, "#calibration svg")
    assert rect(browser, reliability)["width"] > 200
    points = reliability.find_elements(By.CSS_SELECTOR, "circle")
    assert len(points) == 2 and [p.get_attribute("class") for p in points] == ["b1", "thr-copy"]  # honest, not
    skipped = browser.find_element(By.ID, "skipped").text
    assert "outputs/0005.png: file not found" in skipped
    assert "9" * 64 in browser.find_element(By.ID, "provenance").text

    pdf = base64.b64decode(browser.print_page())
    assert pdf.startswith(b"%PDF")
    assert browser.execute_script("return document.scripts.length") == 0
    elapsed = time.perf_counter() - started
    assert elapsed < 60, f"rendering and checking the page took {elapsed:.1f} s"


def test_hostile_strings_stay_text_in_chromium(browser: Any, tmp_path: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    report, images = make_report(title=HOSTILE, span_text=HOSTILE_SPAN, work_id='x" onmouseover="alert(4)')
    report["skipped"][0]["reason"] = '<img src="http://127.0.0.1:9/y.png">'
    path = tmp_path / "report.html"
    path.write_text(render_html(report, images), encoding="utf-8")
    _open(browser, path)
    _assert_self_contained(browser, path.as_uri())
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - raises when no alert() ran
    assert browser.execute_script("return document.scripts.length") == 0
    srcs = browser.execute_script("return Array.from(document.images).map(i => i.src)")
    assert len(srcs) == 3 and all(s.startswith("data:image/jpeg") for s in srcs)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert HOSTILE in body
    assert "alert(2)" in body and "onerror" in body
    assert '<img src="http://127.0.0.1:9/y.png">' in body
    row = browser.find_element(By.CSS_SELECTOR, "#works tr[data-work-id]")
    assert row.get_attribute("data-work-id") == 'x" onmouseover="alert(4)'
    assert row.get_attribute("onmouseover") is None


def test_near_spans_highlight_shared_words_in_linear_time() -> None:
    from detector.report_html import _quote_pair

    work = "It is a truth universally acknowledged, that a single man in possession of a good fortune"
    output = "It is a fact universally acknowledged, that a single rich man in possession of a fortune"
    out_html, work_html = _quote_pair(output, work, "near", "near")
    marked_out = " ".join(re.findall(r'<mark class="near">(.*?)</mark>', out_html))
    marked_work = " ".join(re.findall(r'<mark class="near">(.*?)</mark>', work_html))
    assert "fact" not in marked_out and "rich" not in marked_out
    assert "truth" not in marked_work and "good" not in marked_work
    assert "universally acknowledged, that a single" in marked_out
    assert "man in possession of a" in marked_out and "man in possession of a" in marked_work
    # a hostile near span: long, from a five-word vocabulary, every seventh word changed
    words = [("alpha", "beta", "gamma", "delta", "eps")[(i * 7919) % 5] for i in range(20000)]
    changed = [w if i % 7 else "CHANGED" for i, w in enumerate(words)]
    report, images = make_report()
    spans = report["works"][1]["examples"][0]["match"]["spans"]
    spans[:] = [{"output_start": k, "output_end": k + 1, "work_start": 0, "work_end": 1, "kind": "near",
                 "words": 20000, "discounted": False, "output_text": " ".join(changed),
                 "work_text": " ".join(words)} for k in range(50)]
    report["works"][1]["examples"] *= 3
    started = time.perf_counter()
    page = render_html(report, images)
    assert time.perf_counter() - started < 5
    assert page.count("characters not shown") == 2 * 3 * 8 and "42 more spans in report.json" in page
