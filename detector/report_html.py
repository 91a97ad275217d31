"""report.html: one self-contained page that presents a batch report to people.

`render_html(report, images)` turns the dict `detector.report.build_report` makes (schema
``factor4-report/1``, documented in `detector.report`) into a single HTML page for litigators,
experts and creators: summary first, then which works are copied and at what rate (with Wilson
95 % intervals), score distributions against unrelated outputs, the strongest matched pairs side
by side, the inputs that could not be scanned, and the provenance needed to reproduce and verify
the report.

The page makes no request of any kind: styles are inline, plots are inline SVG, pictures are
``data:`` URIs, there is no script, and a Content-Security-Policy forbids everything else. Every
string taken from the report (titles, AI outputs, file names, reasons) is HTML-escaped, so a
hostile output cannot inject markup. The page is deterministic: the same report and images give
the same bytes (it prints no time of its own, only those recorded in the report).

What is shown is bounded so that a batch of millions of outputs still gives a usable page:
`config.REPORT_WORKS_SHOWN` works (their matched pairs included), SPANS_SHOWN spans per text
match, SPAN_CHARS_SHOWN characters per quoted text and SKIPPED_SHOWN skipped inputs; the page
says how many more report.json holds.

Image matches draw the matched `region` (output pixels) and `work_region` (work pixels) on the
thumbnails. That needs the full picture's size: the match's `output_size` / `work_size`
(``[width, height]``) when present, else the thumbnail's own size when the thumbnail cannot
have been scaled down (both sides under `config.THUMBNAIL_SIDE`). When neither tells, the box is
given as coordinates only, never drawn at a guessed place.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from detector import config
from detector.fingerprints import WORD_RE, normalise_word
from detector.results import COUNTING

log = logging.getLogger(__name__)

__all__ = ["SKIPPED_SHOWN", "SPANS_SHOWN", "SPAN_CHARS_SHOWN", "render_html"]

#: Spans shown per text match (the largest, non-discounted first, then in output order).
SPANS_SHOWN = 8
#: Characters shown of each quoted span; a longer one keeps its start and end.
SPAN_CHARS_SHOWN = 1600
#: Rows of the skipped-inputs table.
SKIPPED_SHOWN = 500
#: Values of a prompt-type or generator split listed per work.
SPLIT_VALUES_SHOWN = 8

SPAN_KINDS = ("verbatim", "near", "paraphrase")
VERDICTS = ("copy", "similar", "unrelated")
DASH = "\u2014"
NBSP = "\u00a0"

_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src 'none'; "
       "base-uri 'none'; form-action 'none'")

CSS = """
:root { --ink:#1b1b1b; --muted:#5f6368; --rule:#d0d4d9; --copy:#b3261e; --similar:#b26a00;
  --bar:#2f5d8a; --bar2:#a9c1da; --null:#333; --verbatim:#ffe066; --near:#ffc58f;
  --paraphrase:#cfe3ff; --discounted:#e4e4e4; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: var(--ink); background: #fff; line-height: 1.45; margin: 0 auto; padding: 1.5rem;
  max-width: 72rem; font-size: 15px; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 .6rem; border-bottom: 2px solid var(--ink); padding-bottom: .2rem; }
h3 { font-size: 1.1rem; margin: 1.6rem 0 .4rem; }
h4 { font-size: 1rem; margin: 0 0 .5rem; }
p { margin: .4rem 0; }
code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .85em; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f6f7f8; padding: .5rem; border: 1px solid var(--rule); }
.meta, .sub, .note, figcaption, .offsets, .more { color: var(--muted); font-size: .88rem; }
.lead { font-size: 1.05rem; max-width: 60rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; width: 100%; }
th, td { border: 1px solid var(--rule); padding: .3rem .45rem; text-align: left; vertical-align: top; }
th { background: #f0f2f4; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.summary { width: auto; min-width: 28rem; }
table.summary th { width: 22rem; }
table.kv { width: auto; }
table.kv th { white-space: nowrap; }
.hash { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .8em;
  overflow-wrap: anywhere; }
.ci { color: var(--muted); white-space: nowrap; }
ul.split { list-style: none; margin: 0; padding: 0; font-size: .85rem; }
ul.split li { margin: 0 0 .15rem; }
.verdict { font-weight: 700; text-transform: uppercase; font-size: .8rem; letter-spacing: .03em; }
.verdict-copy { color: var(--copy); } .verdict-similar { color: var(--similar); }
.verdict-unrelated { color: var(--muted); }
figure { margin: .8rem 0; }
svg { max-width: 100%; height: auto; font-family: inherit; }
svg text { fill: var(--ink); font-size: 11px; }
svg .axis { stroke: var(--ink); stroke-width: 1; }
svg .grid { stroke: #e3e6e9; stroke-width: 1; }
svg .b1 { fill: var(--bar); } svg .b2 { fill: var(--bar2); }
svg .ci-bar { stroke: var(--ink); stroke-width: 1.5; }
svg .null { fill: none; stroke: var(--null); stroke-width: 1.8; }
svg .thr { stroke-width: 1.5; stroke-dasharray: 5 4; }
svg .thr-copy { stroke: var(--copy); } svg .thr-similar { stroke: var(--similar); }
svg text.thr-copy { fill: var(--copy); stroke: none; } svg text.thr-similar { fill: var(--similar); stroke: none; }
.work-pairs { margin-top: 1.6rem; }
.pair { border: 1px solid var(--rule); border-radius: 4px; padding: .8rem; margin: .8rem 0; }
.pair-images { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
.pair-images figure { margin: 0; text-align: center; }
.frame { position: relative; display: inline-block; max-width: 100%; line-height: 0; border: 1px solid var(--rule); }
.frame img { display: block; max-width: 100%; height: auto; }
.region { position: absolute; border: 3px solid #e0001b; box-shadow: 0 0 0 1px #fff, inset 0 0 0 1px #fff; }
.placeholder { display: flex; align-items: center; justify-content: center; min-height: 10rem;
  border: 2px dashed var(--rule); color: var(--muted); padding: 1rem; line-height: 1.4; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem .8rem; margin: .7rem 0 0; font-size: .9rem; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
table.spans { table-layout: fixed; }
table.spans td { width: 50%; }
blockquote.q { margin: .25rem 0 0; white-space: pre-wrap; overflow-wrap: anywhere; font-family: Georgia, "Times New Roman", serif; }
mark { color: inherit; padding: 0 .05em; }
mark.verbatim { background: var(--verbatim); border-bottom: 2px solid #c9a400; }
mark.near { background: var(--near); border-bottom: 2px dashed #c16a1f; }
mark.paraphrase { background: var(--paraphrase); border-bottom: 2px dotted #3f73b5; }
tr.discounted blockquote.q, tr.discounted .offsets { color: #777; }
mark.discounted { background: var(--discounted); border-bottom: 2px solid #aaa; }
.elided { color: var(--muted); font-style: italic; font-family: system-ui, sans-serif; }
.legend mark { margin-right: .6rem; }
.unicode-isolate, bdi { unicode-bidi: isolate; }
footer { margin-top: 2.5rem; border-top: 1px solid var(--rule); padding-top: .5rem; }
@page { margin: 14mm; }
@media print {
  body { padding: 0; max-width: none; font-size: 10.5pt; }
  a { color: inherit; text-decoration: none; }
  h2 { break-after: avoid; } h3, h4 { break-after: avoid; }
  .pair, figure, tr { break-inside: avoid; }
  mark, .region, svg, th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
@media (max-width: 700px) { .pair-images { grid-template-columns: 1fr; } }
"""


# -- small helpers ----------------------------------------------------------------------------


def _clean(value: Any) -> str:
    """*value* as text with control characters and lone surrogates (which cannot be encoded
    as UTF-8) replaced by U+FFFD."""
    return _UNSAFE.sub("\ufffd", value if isinstance(value, str) else str(value))


def _e(value: Any, missing: str = DASH) -> str:
    """HTML-escaped text of *value* (quotes included); *missing* (trusted) for None or ""."""
    if value is None or (isinstance(value, str) and not value):
        return missing
    return html.escape(_clean(value), quote=True)


def _bdi(value: Any, missing: str = DASH) -> str:
    """Escaped text isolated from the surrounding text's direction (a title holding
    right-to-left override characters cannot reorder the page around it)."""
    return f"<bdi>{_e(value, missing)}</bdi>"


def _d(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _l(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    v = _num(value)
    return int(v) if v is not None else None


def _count(value: Any) -> str:
    v = _int(value)
    return f"{v:,}" if v is not None else DASH


def _pct(value: Any) -> str:
    """A share as a percentage: "7.5 %", "0.33 %", "0 %"; a dash when unknown."""
    v = _num(value)
    if v is None:
        return DASH
    p = v * 100
    if p == 0:
        return f"0{NBSP}%"
    if abs(p) < 1:
        return f"{p:.2g}{NBSP}%"
    return f"{p:.1f}{NBSP}%"


def _score(value: Any) -> str:
    v = _num(value)
    return f"{v:.3f}" if v is not None else DASH


def _signal(value: Any) -> str:
    if value is None:
        return "not among the nearest"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    v = _num(value)
    if v is not None:
        return f"{v:.0f}" if v.is_integer() and abs(v) >= 2 else f"{v:.3f}"
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _ci(rate: Mapping[str, Any]) -> str:
    ci = _l(rate.get("ci95"))
    if len(ci) != 2 or _num(ci[0]) is None or _num(ci[1]) is None:
        return ""
    low, high = (v.replace(f"{NBSP}%", "") for v in (_pct(ci[0]), _pct(ci[1])))
    return f"{low}\u2013{high}{NBSP}%"


def _rate_html(rate: Any) -> str:
    r = _d(rate)
    if _num(r.get("rate")) is None:
        return f'<span class="rate">{DASH}</span> <span class="ci">(no outputs)</span>'
    ci = _ci(r)
    ci_html = f' <span class="ci">[{_e(ci)}]</span>' if ci else ""
    return f'<span class="rate">{_e(_pct(r.get("rate")))}</span>{ci_html}'


def _rate_text(rate: Any) -> str:
    """Plain text of a rate: "3 / 40 = 7.5 % (95 % CI 2.6–19.9 %)"."""
    r = _d(rate)
    text = f"{_count(r.get('count'))} / {_count(r.get('outputs'))} = {_pct(r.get('rate'))}"
    ci = _ci(r)
    return f"{text} (95{NBSP}% CI {ci})" if ci else text


def _work_label(work: Mapping[str, Any]) -> str:
    """A work's title, else its file name, else its id (raw text: escape it)."""
    for key in ("title", "source", "id"):
        value = work.get(key)
        if isinstance(value, str) and value:
            return value.rsplit("/", 1)[-1] if key == "source" else value
    return "untitled work"


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _nice_ceiling(value: float, steps: Sequence[float]) -> float:
    for s in steps:
        if value <= s + 1e-12:
            return s
    return steps[-1]


def _image_uri(data: Any) -> tuple[str, tuple[int, int] | None] | None:
    """A data: URI for thumbnail bytes and their pixel size; None when there are none or they
    are not a JPEG or PNG picture (the page then says the picture is unavailable)."""
    if not isinstance(data, bytes | bytearray) or not data:
        return None
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            size = (int(im.size[0]), int(im.size[1]))
            fmt = im.format
    except Exception:  # noqa: BLE001 - any decoding failure: shown as unavailable
        fmt = None
    if fmt not in ("JPEG", "PNG"):
        log.warning("report.html: a thumbnail (%d bytes) is not a JPEG or PNG picture; shown as unavailable",
                    len(data))
        return None
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(bytes(data)).decode('ascii')}", size


def _size(value: Any) -> tuple[int, int] | None:
    v = _l(value)
    if len(v) != 2:
        return None
    w, h = _int(v[0]), _int(v[1])
    return (w, h) if w and h and w > 0 and h > 0 else None


def _box(value: Any) -> tuple[int, int, int, int] | None:
    b = _d(value)
    coords = tuple(_int(b.get(k)) for k in ("left", "top", "right", "bottom"))
    if any(c is None for c in coords):
        return None
    left, top, right, bottom = coords  # type: ignore[misc]
    return (left, top, right, bottom) if right > left and bottom > top else None


def _full_size(declared: Any, thumb_size: tuple[int, int] | None) -> tuple[int, int] | None:
    """The full picture's pixel size, for placing a box on its thumbnail: the declared size,
    else the thumbnail's when it cannot have been scaled down; None when unknown."""
    size = _size(declared)
    if size is None and thumb_size and max(thumb_size) < config.THUMBNAIL_SIDE:
        size = thumb_size
    return size


def _fits(box: tuple[int, int, int, int], size: tuple[int, int]) -> bool:
    return box[0] >= 0 and box[1] >= 0 and box[2] <= size[0] and box[3] <= size[1]


# -- page -------------------------------------------------------------------------------------


def render_html(report: dict[str, Any], images: dict[str, bytes]) -> str:
    """One self-contained HTML page presenting *report* (see the module docstring).

    *images* maps ``"work:<work id>"`` and ``"output:<line>"`` to JPEG thumbnails; a missing one
    is shown as a placeholder saying the picture is unavailable. Raises TypeError when *report*
    is not the dict `build_report` returns. The result is deterministic.
    """
    if not isinstance(report, Mapping):
        raise TypeError(f"render_html takes the report dict build_report returns, got {type(report).__name__}")
    if images is None:
        images = {}
    if not isinstance(images, Mapping):
        raise TypeError(f"images must map 'work:<id>' / 'output:<line>' to JPEG bytes, got {type(images).__name__}")
    page = _Page(report, images)
    return page.render()


class _Page:
    """Renders one report; holds the parts several sections use."""

    def __init__(self, report: Mapping[str, Any], images: Mapping[str, Any]) -> None:
        self.report = report
        self.images = images
        self.summary = _d(report.get("summary"))
        self.collection = _d(report.get("collection"))
        self.provenance = _d(report.get("provenance"))
        thresholds = _d(self.summary.get("thresholds"))
        self.copy_t = _num(thresholds.get("copy"))
        self.similar_t = _num(thresholds.get("similar"))
        if self.copy_t is None:
            self.copy_t = config.COPY_SCORE
        if self.similar_t is None:
            self.similar_t = config.SIMILAR_SCORE
        works = [w for w in _l(report.get("works")) if isinstance(w, Mapping)]
        self.works_total = len(works)
        self.works = works[: max(0, int(config.REPORT_WORKS_SHOWN))]

    # -- whole page ---------------------------------------------------------------------------
    def render(self) -> str:
        name = self.collection.get("name")
        title = f"factor4 evidence report \u2014 collection {_clean(name) if name else 'unnamed'}"
        parts = [
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
            f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">\n',
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
            '<meta name="referrer" content="no-referrer">\n',
            '<link rel="icon" href="data:,">\n',
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
            self._header(),
            "<main>\n",
            self._summary(),
            self._works(),
            self._plots(),
            self._calibration(),
            self._pairs(),
            self._skipped(),
            self._provenance(),
            "</main>\n",
            self._footer(),
            "</body>\n</html>\n",
        ]
        return "".join(parts)

    def _n_collection_works(self) -> int | None:
        works = self.collection.get("works")
        return len(works) if isinstance(works, list) else None

    def _header(self) -> str:
        name = self.collection.get("name")
        finished = self.provenance.get("finished_utc")
        scanned = _d(self.summary.get("scanned"))
        total = sum(v for v in (_int(x) for x in scanned.values()) if v)
        per = ", ".join(f"{_count(n)} {_e(m)}{'s' if _int(n) != 1 else ''}" for m, n in sorted(scanned.items()))
        n_works = self._n_collection_works()
        works_txt = f"the {_count(n_works)} reference works" if n_works is not None else "the reference works"
        return (
            "<header>\n"
            f"<h1>Evidence report: AI outputs against collection \u201c{_bdi(name, 'unnamed')}\u201d</h1>\n"
            f'<p class="meta">Report of {_e(finished)} (UTC) \u00b7 collection {_bdi(name, "unnamed")}, '
            f"generation {_e(self.collection.get('generation'))} \u00b7 factor4 {_e(self.provenance.get('factor4'))}</p>\n"
            f'<p class="lead">Measured: for each of the {_count(total)} AI outputs scanned ({per or "none"}), '
            f"whether it copies ({self._levels_txt('copy')}) or resembles ({self._levels_txt('similar')}) "
            f"any of {works_txt} of collection {_bdi(name, 'unnamed')}; "
            "and for each work, the share of outputs that copy it, with a 95\u00a0% confidence interval.</p>\n"
            "</header>\n"
        )

    # -- 1. summary ---------------------------------------------------------------------------
    def _summary(self) -> str:
        s = self.summary
        scanned = _d(s.get("scanned"))
        total = sum(v for v in (_int(x) for x in scanned.values()) if v)
        rows = [("Inputs (lines of the batch)", _count(s.get("inputs")))]
        for modality, n in sorted(scanned.items()):
            rows.append((f"Outputs scanned: {_e(modality)}", _count(n)))
        rows.append(('Skipped (<a href="#skipped">why</a>)', _count(s.get("skipped"))))

        def share(key: str) -> str:
            n = _int(s.get(key))
            return f"{_count(n)} ({_e(_pct(n / total))} of scanned)" if n is not None and total else _count(n)

        rows.append((f"Outputs with a copy ({self._levels_txt('copy')})", share("outputs_with_copy")))
        rows.append((f"Outputs with a similar match only ({self._levels_txt('similar')})",
                     share("outputs_with_similar_only")))
        n_works = self._n_collection_works()
        matched = _count(s.get("works_matched"))
        rows.append(("Works matched (copy or similar)",
                     f"{matched} of {_count(n_works)} in the collection" if n_works is not None else matched))
        for kind, label in (("prompt_type", "prompt type"), ("generator", "generator")):
            groups = _d(_d(self.report.get("groups")).get(kind))
            if groups:
                items = []
                for value, per in sorted(groups.items(), key=lambda kv: str(kv[0]))[:SPLIT_VALUES_SHOWN]:
                    n = sum(v for v in (_int(x) for x in _d(per).values()) if v)
                    items.append(f"{_bdi(value)}: {_count(n)}")
                more = len(groups) - SPLIT_VALUES_SHOWN
                if more > 0:
                    items.append(f"{more} more in report.json")
                rows.append((f"Outputs by {label}", "; ".join(items)))
        body = "".join(f'<tr><th scope="row">{k}</th><td class="num">{v}</td></tr>\n' for k, v in rows)
        return (
            '<section id="summary">\n<h2>Summary</h2>\n'
            f'<table class="summary"><tbody>\n{body}</tbody></table>\n'
            '<p class="note">How to read the verdicts: each match has a false-positive rate, the share of '
            "outputs that copy nothing in this collection (made from its own other works, edited as outputs "
            "are) whose best match is at least as unusual on any of its signals, with a one-sided 95\u00a0% "
            "upper bound. \u201cCopy\u201d needs copied words or pixels and that upper bound at or below the "
            f"copy level ({self._levels_txt('copy')}); \u201csimilar\u201d at or below the similar level "
            f"({self._levels_txt('similar')}). The score (0 to 1) is descriptive: the strongest signal on a "
            'fixed scale. The <a href="#calibration">calibration section</a> shows how honest the rates are.</p>\n'
            f'<p class="note">How the counts are made: {_e(s.get("counting") or COUNTING)}</p>\n'
            "</section>\n"
        )

    # -- 2. works -----------------------------------------------------------------------------
    def _split(self, split: Any) -> str:
        items = sorted(_d(split).items(), key=lambda kv: str(kv[0]))
        if not items:
            return DASH
        lis = []
        for value, rates in items[:SPLIT_VALUES_SHOWN]:
            r = _d(rates)
            c, cs = _d(r.get("copy")), _d(r.get("copy_or_similar"))
            lis.append(
                f"<li>{_bdi(value)}: {_count(c.get('count'))}/{_count(c.get('outputs'))} = {_rate_html(c)}"
                f' <span class="ci">\u00b7 or similar {_count(cs.get("count"))}/{_count(cs.get("outputs"))}</span></li>'
            )
        if len(items) > SPLIT_VALUES_SHOWN:
            lis.append(f"<li>{len(items) - SPLIT_VALUES_SHOWN} more in report.json</li>")
        return f'<ul class="split">{"".join(lis)}</ul>'

    def _works(self) -> str:
        out = ['<section id="works">\n<h2>Which works are substituted, at what rate</h2>\n']
        if not self.works:
            out.append("<p>No output matched any work of the collection as a copy or as similar.</p>\n</section>\n")
            return "".join(out)
        out.append(
            '<p class="note">Copy rate: the outputs of the work\u2019s modality whose own match to it is a '
            f"copy ({self._levels_txt('copy')}), over all outputs of that modality scanned; copy or similar: "
            f"{self._levels_txt('similar')}. Each count is made from the match\u2019s own evidence, not from "
            "its output\u2019s best match. Brackets: Wilson 95\u00a0% confidence interval. Most copied first.</p>\n"
            '<table class="works">\n<thead><tr><th class="num">#</th><th>Work</th><th>Modality</th>'
            '<th class="num">Copies</th><th>Copy rate [95\u00a0% CI]</th><th>Copy or similar [95\u00a0% CI]</th>'
            "<th>By prompt type (copies)</th><th>By generator (copies)</th></tr></thead>\n<tbody>\n"
        )
        for i, entry in enumerate(self.works, 1):
            work = _d(entry.get("work"))
            copy = _d(entry.get("copy"))
            creator = work.get("creator")
            sub = [f'id <code>{_e(work.get("id"))}</code>']
            if creator:
                sub.append(f"by {_bdi(creator)}")
            pairs = len(_l(entry.get("examples")))
            if pairs:
                sub.append(f'<a href="#pairs-{i}">{pairs} matched pair{"s" if pairs != 1 else ""}</a>')
            sub_html = " \u00b7 ".join(sub)
            out.append(
                f'<tr id="work-{i}" data-work-id="{_e(work.get("id"), "")}">'
                f'<td class="num">{i}</td>'
                f'<td><strong>{_bdi(_work_label(work))}</strong><div class="sub">{sub_html}</div></td>'
                f"<td>{_e(work.get('modality'))}</td>"
                f'<td class="num">{_count(copy.get("count"))} / {_count(copy.get("outputs"))}</td>'
                f"<td>{_rate_html(copy)}</td><td>{_rate_html(entry.get('copy_or_similar'))}</td>"
                f"<td>{self._split(entry.get('by_prompt_type'))}</td>"
                f"<td>{self._split(entry.get('by_generator'))}</td></tr>\n"
            )
        out.append("</tbody></table>\n")
        more = self.works_total - len(self.works)
        if more > 0:
            out.append(f'<p class="more">{more:,} more in report.json (works matched less often).</p>\n')
        out.append(self._rates_svg())
        out.append("</section>\n")
        return "".join(out)

    def _rates_svg(self) -> str:
        """Horizontal bars: each shown work's copy rate with its 95 % interval, over its
        copy-or-similar rate."""
        rows = []
        for entry in self.works:
            work = _d(entry.get("work"))
            copy, cs = _d(entry.get("copy")), _d(entry.get("copy_or_similar"))
            ci = _l(copy.get("ci95"))
            low = _num(ci[0]) if len(ci) == 2 else None
            high = _num(ci[1]) if len(ci) == 2 else None
            rows.append((_work_label(work), _num(copy.get("rate")), low, high, _num(cs.get("rate")), copy, cs))
        top = max([0.0] + [v for r in rows for v in (r[1], r[3], r[4]) if v is not None])
        xmax = _nice_ceiling(top, (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0))
        width, label_w, right, row_h, mt, mb = 760, 250, 80, 22, 40, 40
        pw = width - label_w - right
        height = mt + row_h * len(rows) + mb

        def x(v: float) -> float:
            return label_w + max(0.0, min(1.0, v / xmax)) * pw

        svg = [
            (f'<figure class="plot">\n<svg role="img" '
            f'aria-labelledby="plot-rates-title plot-rates-desc" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}">\n'
            '<title id="plot-rates-title">Copy rate per work, with 95 % confidence intervals</title>\n'
            f'<desc id="plot-rates-desc">One bar per work for the {len(rows)} works shown, most copied first. '
            "Dark bar: copy rate; line: its 95 % Wilson interval; light bar: copy-or-similar rate.</desc>\n")
        ]
        # legend
        svg.append(
            f'<rect class="b2" x="{label_w}" y="8" width="14" height="10"/>'
            f'<text x="{label_w + 18}" y="17">copy or similar</text>'
            f'<rect class="b1" x="{label_w + 120}" y="8" width="14" height="10"/>'
            f'<text x="{label_w + 138}" y="17">copy</text>'
            f'<line class="ci-bar" x1="{label_w + 180}" y1="13" x2="{label_w + 200}" y2="13"/>'
            f'<text x="{label_w + 205}" y="17">95 % interval of the copy rate</text>\n'
        )
        base = mt + row_h * len(rows)
        for k in range(6):
            v = xmax * k / 5
            gx = x(v)
            svg.append(f'<line class="grid" x1="{gx:.1f}" y1="{mt - 4}" x2="{gx:.1f}" y2="{base}"/>'
                       f'<text x="{gx:.1f}" y="{base + 14}" text-anchor="middle">{_e(_pct(v))}</text>\n')
        svg.append(f'<line class="axis" x1="{label_w}" y1="{mt - 4}" x2="{label_w}" y2="{base}"/>'
                   f'<line class="axis" x1="{label_w}" y1="{base}" x2="{label_w + pw}" y2="{base}"/>'
                   f'<text x="{label_w + pw / 2:.0f}" y="{base + 32}" text-anchor="middle">'
                   "share of the modality\u2019s outputs</text>\n")
        for i, (label, r, low, high, r2, copy, cs) in enumerate(rows):
            y = mt + i * row_h
            cy = y + row_h / 2
            tip = f"{label}: copy {_rate_text(copy)}; copy or similar {_rate_text(cs)}"
            g = [(f'<g data-row="{i + 1}"><title>{_e(tip)}</title>'
                 f'<text x="{label_w - 8}" y="{cy + 4:.1f}" text-anchor="end">{i + 1}. {_e(_short(label, 36))}</text>')]
            if r2 is not None:
                g.append(f'<rect class="b2" x="{label_w}" y="{y + 4}" width="{x(r2) - label_w:.1f}" height="{row_h - 8}"/>')
            if r is not None:
                g.append(f'<rect class="b1" x="{label_w}" y="{y + 4}" width="{x(r) - label_w:.1f}" height="{row_h - 8}"/>')
            if low is not None and high is not None:
                x1, x2 = x(low), x(high)
                g.append(f'<line class="ci-bar" x1="{x1:.1f}" y1="{cy:.1f}" x2="{x2:.1f}" y2="{cy:.1f}"/>'
                         f'<line class="ci-bar" x1="{x1:.1f}" y1="{cy - 5:.1f}" x2="{x1:.1f}" y2="{cy + 5:.1f}"/>'
                         f'<line class="ci-bar" x1="{x2:.1f}" y1="{cy - 5:.1f}" x2="{x2:.1f}" y2="{cy + 5:.1f}"/>')
            end = max(v for v in (x(r or 0), x(high or 0), x(r2 or 0)))
            g.append(f'<text x="{end + 6:.1f}" y="{cy + 4:.1f}">{_e(_pct(r) if r is not None else "no outputs")}</text>')
            g.append("</g>\n")
            svg.append("".join(g))
        svg.append("</svg>\n<figcaption>Copy rate per work (dark) with its 95\u00a0% Wilson interval, over "
                   "the copy-or-similar rate (light). Works as in the table above.</figcaption>\n</figure>\n")
        return "".join(svg)

    # -- 3. plots -----------------------------------------------------------------------------
    def _plots(self) -> str:
        dists = _d(self.report.get("distributions"))
        out = ['<section id="plots">\n<h2>How outputs score, against unrelated outputs</h2>\n']
        if not dists:
            out.append("<p>No output was scanned, so there is no score distribution.</p>\n</section>\n")
            return "".join(out)
        out.append(
            '<p class="note">Per modality: the best score of each output scanned (bars), against the '
            "top scores of outputs that copy nothing, made from the collection\u2019s own works for its "
            "calibration (line), on the descriptive 0..1 score. Both are shares of their own totals. Verdicts "
            "come from the false-positive rates (below), not from a cut point on this axis. Outputs to the "
            "right of where unrelated outputs end are unlikely to score so by chance.</p>\n"
        )
        for i, (modality, dist) in enumerate(sorted(dists.items(), key=lambda kv: str(kv[0])), 1):
            out.append(self._histogram_svg(i, str(modality), _d(dist)))
        out.append("</section>\n")
        return "".join(out)

    def _histogram_svg(self, idx: int, modality: str, dist: Mapping[str, Any]) -> str:
        best = [max(0.0, _num(v) or 0.0) for v in _l(dist.get("best_match"))]
        null = [max(0.0, _num(v) or 0.0) for v in _l(dist.get("unrelated"))]
        nb, nn = sum(best), sum(null)
        sb = [v / nb for v in best] if nb else []
        sn = [v / nn for v in null] if nn else []
        top = max([0.0] + sb + sn)
        ymax = _nice_ceiling(top, (0.05, 0.1, 0.2, 0.25, 0.4, 0.5, 0.6, 0.8, 1.0))
        width, height, ml, mr, mt, mb = 680, 280, 60, 20, 48, 46
        pw, ph = width - ml - mr, height - mt - mb

        def x(v: float) -> float:
            return ml + max(0.0, min(1.0, v)) * pw

        def y(v: float) -> float:
            return mt + ph - max(0.0, min(1.0, v / ymax)) * ph

        tid, did = f"plot-hist-{idx}-title", f"plot-hist-{idx}-desc"
        title = f"{modality}: best score of each output vs unrelated outputs"
        desc = (f"Histogram over scores 0 to 1 in {max(len(best), len(null))} bins. {nb:,.0f} outputs scanned "
                f"(bars); {nn:,.0f} unrelated calibration outputs (line).")
        svg = [
            (f'<figure class="plot" data-modality="{_e(modality, "")}">\n<h3>{_e(modality)}</h3>\n'
            f'<svg role="img" aria-labelledby="{tid} {did}" '
            f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">\n'
            f'<title id="{tid}">{_e(title)}</title>\n<desc id="{did}">{_e(desc)}</desc>\n'
            f'<rect class="b1" x="{ml}" y="8" width="14" height="10"/>'
            f'<text x="{ml + 18}" y="17">outputs scanned: best match (n = {nb:,.0f})</text>'
            f'<line class="null" x1="{ml + 260}" y1="13" x2="{ml + 280}" y2="13"/>'
            f'<text x="{ml + 285}" y="17">unrelated outputs, calibration (n = {nn:,.0f})</text>\n')
        ]
        for k in range(5):
            v = ymax * k / 4
            gy = y(v)
            svg.append(f'<line class="grid" x1="{ml}" y1="{gy:.1f}" x2="{ml + pw}" y2="{gy:.1f}"/>'
                       f'<text x="{ml - 6}" y="{gy + 4:.1f}" text-anchor="end">{_e(_pct(v))}</text>\n')
        for k in range(6):
            v = k / 5
            svg.append(f'<text x="{x(v):.1f}" y="{mt + ph + 15}" text-anchor="middle">{v:.1f}</text>')
        svg.append(f'<text x="{ml + pw / 2:.0f}" y="{height - 6}" text-anchor="middle">score</text>'
                   f'<text x="14" y="{mt + ph / 2:.0f}" text-anchor="middle" transform="rotate(-90 14 '
                   f'{mt + ph / 2:.0f})">share of outputs</text>\n')
        n = len(sb)
        for i, share in enumerate(sb):
            x0, x1 = x(i / n), x((i + 1) / n)
            tip = f"score {i / n:.2f}\u2013{(i + 1) / n:.2f}: {_pct(share)} of outputs scanned ({best[i]:,.0f})"
            svg.append(f'<rect class="b1" x="{x0 + 0.5:.1f}" y="{y(share):.1f}" width="{max(0.0, x1 - x0 - 1):.1f}" '
                       f'height="{mt + ph - y(share):.1f}"><title>{_e(tip)}</title></rect>')
        svg.append("\n")
        if sn:
            m = len(sn)
            d = [f"M{x(0):.1f},{y(0):.1f}"]
            for i, share in enumerate(sn):
                d.append(f"V{y(share):.1f}H{x((i + 1) / m):.1f}")
            d.append(f"V{y(0):.1f}")
            svg.append(f'<path class="null" d="{"".join(d)}"><title>unrelated outputs (calibration)</title></path>\n')
        svg.append(f'<line class="axis" x1="{ml}" y1="{mt + ph}" x2="{ml + pw}" y2="{mt + ph}"/>'
                   f'<line class="axis" x1="{ml}" y1="{mt}" x2="{ml}" y2="{mt + ph}"/>\n</svg>\n')
        notes = []
        if not nb:
            notes.append("No output of this modality was scanned.")
        if not nn:
            notes.append("No calibration outputs: the collection has too few works to tell how unrelated "
                         "outputs score.")
        cal = _d(dist.get("calibration"))
        if cal:
            facts = ", ".join(f"{_e(k)}: {_e(_signal(v) if not isinstance(v, str) else v)}"
                              for k, v in sorted(cal.items(), key=lambda kv: str(kv[0])))
            notes.append(f"Calibration: {facts}.")
        svg.append(f"<figcaption>{_e(title)}. {' '.join(notes)}</figcaption>\n</figure>\n")
        return "".join(svg)

    # -- 3b. calibration ----------------------------------------------------------------------
    def _levels_txt(self, which: str) -> str:
        levels = _d(self.summary.get("levels"))
        values = sorted({v for v in (_num(_d(x).get(which)) for x in levels.values()) if v is not None})
        if not values:
            return f"false-positive rate at or below the collection\u2019s {which} level"
        return "false-positive rate \u2264 " + " / ".join(_e(_pct(v)) for v in values) + " (95\u00a0% upper bound)"

    def _calibration(self) -> str:
        dists = _d(self.report.get("distributions"))
        out = ['<section id="calibration">\n<h2>Calibration: how the error rates were measured</h2>\n']
        shown = False
        for i, (modality, dist) in enumerate(sorted(dists.items(), key=lambda kv: str(kv[0])), 1):
            cal = _d(_d(dist).get("calibration"))
            if not cal:
                out.append(f"<p>{_e(modality)}: no calibration (too few unrelated works and no negatives): "
                           "matches have no false-positive rate and no verdict above similar.</p>\n")
                continue
            shown = True
            makeup = ", ".join(f"{_count(_d({'n': x[1]}).get('n'))} {_e(x[0])}" for x in _l(cal.get("makeup"))
                               if isinstance(x, list | tuple) and len(x) == 2)
            facts = [
                ("Unrelated outputs (null size)", _count(cal.get("queries"))),
                ("Made of", makeup or DASH),
                ("How", _e(cal.get("method"))),
                ("Works at calibration", _count(cal.get("works"))),
                ("Levels", f"copy {_e(_pct(_num(cal.get('copy_level'))))}, similar "
                           f"{_e(_pct(_num(cal.get('similar_level'))))}"),
                ("Generation", _e(cal.get("generation"))),
            ]
            left = [x for x in _l(cal.get("left_out")) if isinstance(x, str)]
            if left:
                facts.append(("Negatives left out (they copy a reference)", "; ".join(_e(x) for x in left)))
            out.append(f"<h3>{_e(modality)}</h3>\n" + _kv_table(facts))
            out.append(self._reliability_svg(i, str(modality), [_d(r) for r in _l(_d(dist).get("reliability"))]))
        if not shown and not dists:
            out.append("<p>No output was scanned.</p>\n")
        out.append("</section>\n")
        return "".join(out)

    def _reliability_svg(self, idx: int, modality: str, points: list[Mapping[str, Any]]) -> str:
        pts = [(a, m, _int(r.get("outputs")) or 0) for r in points
               if (a := _num(r.get("stated"))) is not None and (m := _num(r.get("measured"))) is not None and a > 0]
        if not pts:
            return "<p>Too few unrelated outputs for a reliability check.</p>\n"
        width, height, ml, mr, mt, mb = 420, 320, 64, 20, 20, 46
        pw, ph = width - ml - mr, height - mt - mb
        lo, hi = math.log10(min(a for a, _, _ in pts)), 0.0
        n = max(k for _, _, k in pts)
        floor = 1.0 / max(1, n)

        def pos(v: float, horizontal: bool) -> float:
            f = (math.log10(max(v, 10 ** lo)) - lo) / (hi - lo) if hi > lo else 0.0
            f = max(0.0, min(1.0, f))
            return ml + f * pw if horizontal else mt + ph - f * ph

        tid, did = f"plot-rel-{idx}-title", f"plot-rel-{idx}-desc"
        title = f"{modality}: stated against measured false-positive rate"
        desc = ("Two-fold cross-fit on the null: each half's outputs are given the rate the other half states. "
                + "; ".join(f"stated {_pct(a)}: measured {_pct(m)}" for a, m, _ in pts) + ".")
        svg = [f'<figure class="plot reliability" data-modality="{_e(modality, "")}">\n'
               f'<svg role="img" aria-labelledby="{tid} {did}" viewBox="0 0 {width} {height}" '
               f'width="{width}" height="{height}">\n<title id="{tid}">{_e(title)}</title>\n'
               f'<desc id="{did}">{_e(desc)}</desc>\n']
        for a, _, _ in pts:
            gx = pos(a, True)
            svg.append(f'<line class="grid" x1="{gx:.1f}" y1="{mt}" x2="{gx:.1f}" y2="{mt + ph}"/>'
                       f'<text x="{gx:.1f}" y="{mt + ph + 14}" text-anchor="middle" font-size="9">{_e(_pct(a))}</text>\n')
        svg.append(f'<line class="thr" x1="{pos(10 ** lo, True):.1f}" y1="{pos(10 ** lo, False):.1f}" '
                   f'x2="{pos(1, True):.1f}" y2="{pos(1, False):.1f}"><title>stated = measured</title></line>\n')
        for a, m, k in pts:
            shown = max(m, floor / 2)
            cls = "b1" if m <= 2 * a else "thr-copy"
            svg.append(f'<circle class="{cls}" cx="{pos(a, True):.1f}" cy="{pos(shown, False):.1f}" r="4">'
                       f"<title>{_e(f'stated {_pct(a)}: measured {_pct(m)} of {k:,} held-out outputs')}</title>"
                       "</circle>\n")
        svg.append(f'<text x="{ml + pw / 2:.0f}" y="{height - 6}" text-anchor="middle">stated rate (log)</text>'
                   f'<text x="14" y="{mt + ph / 2:.0f}" text-anchor="middle" transform="rotate(-90 14 '
                   f'{mt + ph / 2:.0f})">measured share (log)</text>\n'
                   f'<line class="axis" x1="{ml}" y1="{mt + ph}" x2="{ml + pw}" y2="{mt + ph}"/>'
                   f'<line class="axis" x1="{ml}" y1="{mt}" x2="{ml}" y2="{mt + ph}"/>\n</svg>\n')
        svg.append(f"<figcaption>{_e(title)}: points on or under the diagonal are honest (measured at most "
                   "stated); a measured share of 0 is drawn at the bottom. Held out: "
                   f"{n:,} outputs.</figcaption>\n</figure>\n")
        return "".join(svg)

    # -- 4. pairs -----------------------------------------------------------------------------
    def _pairs(self) -> str:
        out = ['<section id="pairs">\n<h2>Matched pairs</h2>\n']
        shown = [(i, e) for i, e in enumerate(self.works, 1) if _l(e.get("examples"))]
        if not shown:
            out.append("<p>No matched pairs to show.</p>\n</section>\n")
            return "".join(out)
        out.append(
            '<p class="note">For each work above, its strongest matches: the output on the left, the work on '
            "the right. Red rectangles: the matched region. Highlighted text: "
            '<span class="legend"><mark class="verbatim">verbatim</mark><mark class="near">near-verbatim '
            '(differing words not highlighted)</mark><mark class="paraphrase">paraphrase</mark>'
            '<mark class="discounted">shared by many works (not counted)</mark></span></p>\n'
        )
        for i, entry in shown:
            work = _d(entry.get("work"))
            wid = _e(work.get("id"), "")
            out.append(f'<section class="work-pairs" id="pairs-{i}" data-work-id="{wid}">\n'
                       f'<h3>{i}. {_bdi(_work_label(work))} <span class="sub">({_e(work.get("modality"))}; '
                       f"copy rate {_e(_pct(_d(entry.get('copy')).get('rate')))})</span></h3>\n")
            for ex in _l(entry.get("examples")):
                if isinstance(ex, Mapping):
                    out.append(self._pair(work, _d(ex)))
            out.append("</section>\n")
        out.append("</section>\n")
        return "".join(out)

    def _pair(self, work: Mapping[str, Any], ex: Mapping[str, Any]) -> str:
        match = _d(ex.get("match"))
        modality = work.get("modality") or _d(match.get("work")).get("modality")
        line = ex.get("line")
        has_id = ex.get("id") not in (None, "")
        who = f"line {_e(line)}" + (f" \u00b7 id {_bdi(ex.get('id'))}" if has_id else "")
        head = (f'<article class="pair" data-work-id="{_e(work.get("id"), "")}" data-line="{_e(line, "")}" '
                f'data-verdict="{_e(match.get("verdict"), "")}">\n'
                f"<h4>Output {who} \u2194 {_bdi(_work_label(work))}</h4>\n")
        if modality == "image":
            who_text = f"line {_e(line)}" + (f", id {_e(ex.get('id'))}" if has_id else "")
            body = self._image_pair(work, ex, match, who, who_text)
        else:
            body = self._text_pair(work, ex, match, who)
        return head + body + "</article>\n"

    def _facts(self, ex: Mapping[str, Any], match: Mapping[str, Any], extra: list[tuple[str, str]]) -> str:
        verdict = match.get("verdict")
        vcls = f"verdict-{verdict}" if verdict in VERDICTS else ""
        fpr = _num(match.get("fpr"))
        rows = [
            ("Score", f"{_score(match.get('score'))} <span class=\"verdict {vcls}\">{_e(verdict)}</span>"),
        ]
        rows += extra
        upper, n_null = _num(match.get("fpr_upper")), _int(match.get("null_size"))
        rows.append(("False-positive rate",
                     (f"{_e(_pct(fpr))} (95\u00a0% upper bound {_e(_pct(upper))}, from {_count(n_null)} unrelated "
                      "outputs)") if fpr is not None and upper is not None
                     else "not calibrated (too few works in the collection, and no negatives)"))
        if match.get("reason"):
            rows.append(("Why", _e(match.get("reason"))))
        signals = _d(match.get("signals"))
        if signals:
            sig = ", ".join(f"<code>{_e(k)}</code> {_e(_signal(v))}"
                            for k, v in sorted(signals.items(), key=lambda kv: str(kv[0])))
            rows.append(("Signals", sig))
        rows.append(("Input", f'<span class="mono">{_e(ex.get("input"))}</span>'))
        if ex.get("sha256"):
            rows.append(("Output sha256", f'<span class="hash">{_e(ex.get("sha256"))}</span>'))
        if ex.get("encoding") not in (None, "utf-8"):
            rows.append(("Output decoded as", f'{_e(ex.get("encoding"))} (span offsets count its characters)'))
        return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>\n"

    # images
    def _image_pair(self, work: Mapping[str, Any], ex: Mapping[str, Any], match: Mapping[str, Any], who: str,
                    who_text: str) -> str:
        line = ex.get("line")
        out_fig, out_txt = self._picture(
            self.images.get(f"output:{line}") if line is not None else None,
            match.get("region"), match.get("output_size"),
            alt=f"Output, {who_text}", caption=f"Output, {who}", what="output",
            missing="the output file was not found, or has changed since the scan",
        )
        wid = work.get("id")
        work_fig, work_txt = self._picture(
            self.images.get(f"work:{wid}") if wid is not None else None,
            match.get("work_region"), match.get("work_size"),
            alt=f"Work {_e(_work_label(work))}", caption=f"Work: {_bdi(_work_label(work))}", what="work",
            missing="no thumbnail of this work is stored",
        )
        extra = [("Transform", _e(match.get("transform"), "none (not evidence of copying)")),
                 ("Region in the output", out_txt), ("Region in the work", work_txt)]
        return (f'<div class="pair-images">\n{out_fig}{work_fig}</div>\n'
                + self._facts(ex, match, extra))

    def _picture(self, data: Any, region: Any, declared_size: Any, *, alt: str, caption: str, what: str,
                 missing: str) -> tuple[str, str]:
        """A figure with the thumbnail and the box drawn on it; and the box as text. *alt* is
        escaped plain text, *caption* escaped HTML."""
        box = _box(region)
        image = _image_uri(data)
        thumb_size = image[1] if image else None
        size = _full_size(declared_size, thumb_size)
        drawn = False
        if box is not None:
            left, top, right, bottom = box
            box_txt = f"x {left:,}\u2013{right:,}, y {top:,}\u2013{bottom:,} px"
            if size is None:
                box_txt += " (picture size unknown: not drawn)"
            elif not _fits(box, size):
                box_txt += f" (outside the {size[0]:,} \u00d7 {size[1]:,} picture: not drawn)"
            else:
                box_txt += f" of {size[0]:,} \u00d7 {size[1]:,}"
                if box == (0, 0, size[0], size[1]):
                    box_txt += " (the whole picture)"
                drawn = image is not None
        elif region is not None:
            box_txt = "unreadable box in the data"
        elif what == "work":
            box_txt = "not reported (the output is not a crop of the work)"
        else:
            box_txt = "not located"
        if image is None:
            fig = (f'<figure class="{what}">\n<div class="placeholder" role="img" aria-label="{alt}: picture '
                   f'unavailable">Picture unavailable<br>({_e(missing)})</div>\n'
                   f"<figcaption>{caption}</figcaption>\n</figure>\n")
            return fig, box_txt
        uri = image[0]
        dims = f' width="{thumb_size[0]}" height="{thumb_size[1]}"' if thumb_size else ""
        rect = ""
        if drawn and box is not None and size is not None:
            w, h = size
            left, top, right, bottom = box
            pct = [100 * left / w, 100 * top / h, 100 * (right - left) / w, 100 * (bottom - top) / h]
            style = "left:{:.3f}%;top:{:.3f}%;width:{:.3f}%;height:{:.3f}%".format(*pct)
            rect = (f'<div class="region" style="{style}" role="img" '
                    f'aria-label="matched region, {_e(box_txt)}" title="matched region, {_e(box_txt)}"></div>')
        fig = (f'<figure class="{what}">\n<div class="frame"><img src="{uri}"{dims} alt="{alt}">{rect}</div>\n'
               f"<figcaption>{caption}</figcaption>\n</figure>\n")
        return fig, box_txt

    # texts
    def _text_pair(self, work: Mapping[str, Any], ex: Mapping[str, Any], match: Mapping[str, Any], who: str) -> str:
        extra = []
        if "coverage" in match:
            extra.append(("Coverage", f"{_e(_pct(match.get('coverage')))} of the output\u2019s words copied"))
        if "longest_run_words" in match:
            extra.append(("Longest verbatim run", f"{_count(match.get('longest_run_words'))} words"))
        spans = [s for s in _l(match.get("spans")) if isinstance(s, Mapping)]
        extra.append(("Spans", f"{len(spans):,}"))
        out = [self._facts(ex, match, extra)]
        if not spans:
            excerpt = match.get("excerpt")
            if excerpt:
                out.append(f'<p>Excerpt of the output:</p><blockquote class="q">{_e(excerpt)}</blockquote>\n')
            else:
                out.append('<p class="note">No span located (the match rests on passage embeddings).</p>\n')
            return "".join(out)
        ranked = sorted(range(len(spans)),
                        key=lambda k: (bool(spans[k].get("discounted")), -(_num(spans[k].get("words")) or 0), k))
        chosen = sorted(ranked[:SPANS_SHOWN],
                        key=lambda k: (_num(spans[k].get("output_start")) or 0, k))
        out.append('<table class="spans">\n<thead><tr>'
                   f"<th>Output ({who})</th><th>Work: {_bdi(_work_label(work))}</th></tr></thead>\n<tbody>\n")
        for k in chosen:
            out.append(self._span_row(spans[k]))
        out.append("</tbody></table>\n")
        if len(spans) > len(chosen):
            out.append(f'<p class="more">{len(spans) - len(chosen):,} more spans in report.json '
                       "(the largest are shown).</p>\n")
        return "".join(out)

    def _span_row(self, span: Mapping[str, Any]) -> str:
        kind = span.get("kind") if span.get("kind") in SPAN_KINDS else "near"
        discounted = bool(span.get("discounted"))
        out_text = span.get("output_text") if isinstance(span.get("output_text"), str) else ""
        work_text = span.get("work_text") if isinstance(span.get("work_text"), str) else ""
        words = _int(span.get("words"))
        label = f"{kind}" + (f", {words:,} words" if words is not None else "")
        if discounted:
            shared = _int(span.get("shared_by"))
            in_bg = _int(span.get("background_works"))
            label += (f"; shared by {shared:,} works" if shared else "; shared by several works") \
                + (f" ({in_bg:,} in the background corpus)" if in_bg else "") \
                + " \u2014 not counted as evidence"
        cls = "discounted" if discounted else kind
        out_html, work_html = _quote_pair(out_text, work_text, kind, cls)

        def side(start: Any, end: Any, quoted: str) -> str:
            where = f"characters {_count(start)}\u2013{_count(end)}"
            return (f'<td><div class="offsets">{where} \u00b7 {_e(label)}</div>'
                    f'<blockquote class="q">{quoted}</blockquote></td>')

        return (f'<tr class="span {cls}">'
                + side(span.get("output_start"), span.get("output_end"), out_html)
                + side(span.get("work_start"), span.get("work_end"), work_html) + "</tr>\n")

    # -- 5. skipped ---------------------------------------------------------------------------
    def _skipped(self) -> str:
        rows = [r for r in _l(self.report.get("skipped")) if isinstance(r, Mapping)]
        out = ['<section id="skipped">\n<h2>Skipped inputs</h2>\n']
        if not rows:
            out.append("<p>Every input was scanned.</p>\n</section>\n")
            return "".join(out)
        out.append('<table class="skipped">\n<thead><tr><th class="num">Line</th><th>Id</th><th>Reason</th>'
                   "</tr></thead>\n<tbody>\n")
        for r in rows[:SKIPPED_SHOWN]:
            out.append(f'<tr><td class="num">{_e(r.get("line"))}</td><td>{_bdi(r.get("id"))}</td>'
                       f"<td>{_e(r.get('reason'))}</td></tr>\n")
        out.append("</tbody></table>\n")
        if len(rows) > SKIPPED_SHOWN:
            out.append(f'<p class="more">{len(rows) - SKIPPED_SHOWN:,} more in report.json.</p>\n')
        out.append("</section>\n")
        return "".join(out)

    # -- 6. provenance ------------------------------------------------------------------------
    def _provenance(self) -> str:
        p = self.provenance
        c = self.collection
        out = ['<section id="provenance">\n<h2>Provenance</h2>\n']
        command = p.get("command")
        if isinstance(command, list):
            command_txt = shlex.join(_clean(x) for x in command)
        else:
            command_txt = _clean(command) if command else ""
        general = [
            ("factor4", _e(p.get("factor4"))),
            ("Python", _e(p.get("python"))),
            ("Platform", _e(p.get("platform"))),
            ("Command", f"<code>{_e(command_txt)}</code>"),
            ("Started (UTC)", _e(p.get("started_utc"))),
            ("Finished (UTC)", _e(p.get("finished_utc"))),
            ("Collection", (f"{_bdi(c.get('name'))}, generation {_e(c.get('generation'))}, "
                           f"{_count(self._n_collection_works())} works")),
            ("Collection manifest sha256", f'<span class="hash">{_e(c.get("manifest_sha256"))}</span>'),
            ("Verdict levels", f"copy: {self._levels_txt('copy')}; similar: {self._levels_txt('similar')}"),
            ("Prior score cut points", f"copy \u2265 {_score(self.copy_t)}, similar \u2265 {_score(self.similar_t)}"),
        ]
        out.append(_kv_table(general))
        encoders = [e for e in _l(p.get("encoders")) if isinstance(e, Mapping)]
        out.append("<h3>Encoders</h3>\n")
        if encoders:
            out.append('<table class="encoders"><thead><tr><th>Channel</th><th>Encoder</th><th>Modality</th>'
                       '<th class="num">Dim</th><th>Weights sha256</th></tr></thead><tbody>\n')
            for enc in encoders:
                out.append(f"<tr><td>{_e(enc.get('channel'))}</td><td><code>{_e(enc.get('encoder'))}</code></td>"
                           f"<td>{_e(enc.get('modality'))}</td><td class=\"num\">{_e(enc.get('dim'))}</td>"
                           f'<td class="hash">{_e(enc.get("weights_sha256"), "none (no weights)")}</td></tr>\n')
            out.append("</tbody></table>\n")
        else:
            out.append("<p>Not recorded.</p>\n")
        packages = _d(p.get("packages"))
        out.append("<h3>Packages</h3>\n")
        out.append(_kv_table([(_e(k), _e(v)) for k, v in sorted(packages.items(), key=lambda kv: str(kv[0]))])
                   if packages else "<p>Not recorded.</p>\n")
        thresholds = _d(p.get("signal_thresholds"))
        out.append("<h3>Signal thresholds</h3>\n")
        if thresholds:
            out.append('<p class="note">Raw values of each signal mapped to scores 0, '
                       f"{_score(self.similar_t)} (similar), {_score(self.copy_t)} (copy) and 1.</p>\n"
                       '<table class="thresholds"><thead><tr><th>Signal</th><th class="num">0</th>'
                       '<th class="num">similar</th><th class="num">copy</th><th class="num">1</th>'
                       "</tr></thead><tbody>\n")
            for name, values in sorted(thresholds.items(), key=lambda kv: str(kv[0])):
                vals = list(_l(values))
                cells = "".join(f'<td class="num">{_e(v)}</td>' for v in vals[:4])
                cells += '<td class="num"></td>' * max(0, 4 - len(vals))
                out.append(f"<tr><td><code>{_e(name)}</code></td>{cells}</tr>\n")
            out.append("</tbody></table>\n")
        else:
            out.append("<p>Not recorded.</p>\n")
        files = _d(self.report.get("files"))
        out.append("<h3>Files</h3>\n")
        out.append(_kv_table([(f"<code>{_e(k)}</code>", f'<span class="hash">{_e(v)}</span>')
                              for k, v in sorted(files.items(), key=lambda kv: str(kv[0]))])
                   if files else "<p>Not recorded.</p>\n")
        out.append("<p>The digest in <code>DIGEST</code> covers <code>inputs.jsonl</code>, "
                   "<code>results.jsonl</code>, <code>report.json</code> and <code>report.html</code>; "
                   "<code>factor4 verify DIR</code> recomputes it.</p>\n")
        manifest = c.get("manifest")
        if isinstance(manifest, Mapping):
            text = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False, default=str)
            out.append(f"<h3>Collection manifest</h3>\n<pre>{_e(text)}</pre>\n")
        out.append("</section>\n")
        return "".join(out)

    def _footer(self) -> str:
        return (f'<footer class="note">Made by factor4 {_e(self.provenance.get("factor4"))} from report.json '
                f"(schema {_e(self.report.get('schema'))}). This page loads nothing from the network.</footer>\n")


def _kv_table(rows: list[tuple[str, str]]) -> str:
    """A two-column table of already-escaped cells."""
    body = "".join(f'<tr><th scope="row">{k}</th><td>{v}</td></tr>\n' for k, v in rows)
    return f'<table class="kv"><tbody>\n{body}</tbody></table>\n'


# -- text highlighting ------------------------------------------------------------------------


Segments = list[tuple[str, bool]]


def _quote_pair(out_text: str, work_text: str, kind: str, cls: str) -> tuple[str, str]:
    """Escaped HTML of a span's two quoted texts, copied words in ``<mark class=cls>``.

    Verbatim and paraphrase spans are highlighted whole. Near spans are highlighted word by
    word: only the words both texts share in order (compared as the aligner compares them: case,
    punctuation and curly apostrophes ignored), so replaced words stand out. A text longer than
    SPAN_CHARS_SHOWN keeps its start and end; near spans then compare start with start and end
    with end. The work is linear in the shown text, whatever the data.
    """
    out_parts, out_omitted = _shown(out_text)
    work_parts, work_omitted = _shown(work_text)
    if kind == "near" and len(out_parts) == len(work_parts):
        pairs = [_near_segments(a, b) for a, b in zip(out_parts, work_parts, strict=True)]
        out_segs, work_segs = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        out_segs = [[(t, True)] for t in out_parts]
        work_segs = [[(t, True)] for t in work_parts]
    return _render(out_segs, out_omitted, cls), _render(work_segs, work_omitted, cls)


def _shown(text: str, limit: int = SPAN_CHARS_SHOWN) -> tuple[list[str], int]:
    """*text* whole, or its first two thirds and last third of *limit* characters (cut at
    spaces where one is near), and how many characters are left out."""
    if len(text) <= limit:
        return [text], 0
    head_n = (2 * limit) // 3
    tail_n = limit - head_n
    head = text[:head_n]
    cut = head.rfind(" ", head_n - 40)
    if cut > 0:
        head = head[:cut]
    tail_start = len(text) - tail_n
    cut = text.find(" ", tail_start, tail_start + 40)
    tail = text[cut + 1 if cut >= 0 else tail_start:]
    return [head, tail], len(text) - len(head) - len(tail)


#: Near spans: words skipped at most on each side to find the texts in step again.
RESYNC_WORDS = 6


def _near_segments(out_text: str, work_text: str) -> tuple[Segments, Segments]:
    """Both texts as (text, highlighted) pieces, the words they share in order highlighted.

    A greedy walk, as the aligner chains words: equal words advance together; at a difference
    the nearest point (fewest words skipped, at most RESYNC_WORDS on each side) where two
    consecutive words agree again resumes the walk.
    """
    a = list(WORD_RE.finditer(out_text))
    b = list(WORD_RE.finditer(work_text))
    ka = [normalise_word(m.group()) for m in a]
    kb = [normalise_word(m.group()) for m in b]
    na, nb = len(ka), len(kb)
    in_a: set[int] = set()
    in_b: set[int] = set()

    def agree(i: int, j: int) -> bool:
        return ka[i] == kb[j] and (i + 1 >= na or j + 1 >= nb or ka[i + 1] == kb[j + 1])

    i = j = 0
    while i < na and j < nb:
        if ka[i] == kb[j]:
            in_a.add(i)
            in_b.add(j)
            i += 1
            j += 1
            continue
        step = next(((i + di, j + d - di) for d in range(1, 2 * RESYNC_WORDS + 1)
                     for di in (d // 2, *(x for x in range(d + 1) if x != d // 2))
                     if di <= RESYNC_WORDS and d - di <= RESYNC_WORDS
                     and i + di < na and j + d - di < nb and agree(i + di, j + d - di)), None)
        i, j = step if step is not None else (i + 1, j + 1)
    return _word_segments(out_text, a, in_a), _word_segments(work_text, b, in_b)


def _word_segments(text: str, words: list[re.Match[str]], marked: set[int]) -> Segments:
    """*text* cut into pieces: runs of marked words (with what lies between them) highlighted."""
    segs: Segments = []
    pos = 0
    i = 0
    while i < len(words):
        if i not in marked:
            i += 1
            continue
        j = i
        while j + 1 < len(words) and j + 1 in marked:
            j += 1
        start, end = words[i].start(), words[j].end()
        if start > pos:
            segs.append((text[pos:start], False))
        segs.append((text[start:end], True))
        pos = end
        i = j + 1
    if pos < len(text):
        segs.append((text[pos:], False))
    return segs


def _render(parts: list[Segments], omitted: int, cls: str) -> str:
    """Escaped HTML of the pieces, highlighted ones in ``<mark class=cls>``, with a note where
    *omitted* characters were left out between two parts."""
    if not any(t for segs in parts for t, _ in segs):
        return '<span class="elided">(no text recorded)</span>'
    html_parts = []
    for n, segs in enumerate(parts):
        if n:
            html_parts.append(f'<span class="elided"> [\u2026 {omitted:,} characters not shown \u2026] </span>')
        for text, hl in segs:
            esc = _e(text, "")
            html_parts.append(f'<mark class="{cls}">{esc}</mark>' if hl and text.strip() else esc)
    return "".join(html_parts)
