"""Text evidence end to end: spans, the common-text discount, calibrated false-positive rates,
bad outputs. The works are module docstrings of Python's standard library; four of them end
with the Zen of Python, a passage they share the way works share a stock quotation."""

from __future__ import annotations

import codecs
import json
import random
import re
import this
from pathlib import Path

import pytest

from detector import Detector, config
from detector.calibration import TEXT_EDITS, near_duplicate_groups
from detector.nullmodel import upper_bound
from detector.cli import main
from detector.errors import InputError
from detector.fingerprints import word_keys
from detector.results import ScanResult
from detector.works import text_item
from indexes import Collection, Store
from tests.conftest import module_doc

WORKS = ["pdb", "re", "configparser", "csv", "argparse", "json", "socket", "pydoc", "unittest"]
WITH_ZEN = ["csv", "json", "socket", "pydoc"]
ZEN = codecs.decode(this.s, "rot13")


def same_words(a: str, b: str) -> bool:
    return word_keys(a)[0].tolist() == word_keys(b)[0].tolist()


def doc_words(mod: str) -> list[str]:
    return module_doc(mod).split()


@pytest.fixture(scope="module")
def txt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Detector, Path]:
    root = tmp_path_factory.mktemp("txt")
    works = root / "works"
    works.mkdir()
    for mod in WORKS:
        body = module_doc(mod) + ("\n\n" + ZEN if mod in WITH_ZEN else "")
        (works / f"{mod}.txt").write_text(body, encoding="utf-8")
    det = Detector(root / "home")
    det.create("txt", ["minilm", "shingles"])
    report = det.add("txt", [works])
    assert len(report.added) == len(WORKS) and not report.failed
    return det, root


def scan(det: Detector, text: str, name: str = "out") -> ScanResult:
    return det.scan_item("txt", text_item(text, name), top=10)


def match_of(res: ScanResult, mod: str):
    return next(m for m in res.matches if m.work.title == mod)


def stored_text(root: Path, work_id: str) -> str:
    with Collection.open(Store(root / "home").path("txt")) as coll:
        return coll.text(work_id) or ""


def test_buried_excerpt_is_found_with_exact_offsets(txt: tuple[Detector, Path]) -> None:
    det, root = txt
    excerpt = " ".join(doc_words("pdb")[400:460])
    text = " ".join(doc_words("heapq")[:150]) + "\n\n" + excerpt + "\n\n" + " ".join(doc_words("sched")[:150])
    res = scan(det, text)
    best = res.best
    assert best is not None and best.work.title == "pdb" and best.verdict == "copy"
    verbatim = [s for s in best.spans if s.kind == "verbatim" and not s.discounted]
    assert len(verbatim) == 1
    span = verbatim[0]
    assert span.words == best.signals["longest_run_words"] == best.signals["copied_words"] == 60
    assert text[span.output_start : span.output_end] == span.output_text
    assert text.index(excerpt) == span.output_start  # from the excerpt's first word to its last
    assert same_words(span.output_text, excerpt)
    assert stored_text(root, best.work.id)[span.work_start : span.work_end] == span.work_text
    assert same_words(span.work_text, excerpt)
    assert best.signals["coverage"] == pytest.approx(60 / len(word_keys(text)[0]))
    assert best.excerpt == span.output_text
    others = [m for m in res.matches if m.work.title != "pdb"]
    assert all(m.verdict == "unrelated" for m in others)


def test_reworded_passage_is_a_near_span(txt: tuple[Detector, Path]) -> None:
    det, _ = txt
    src = doc_words("re")[200:320]
    filler = doc_words("doctest")
    out = [filler[i] if i % 5 == 2 else w for i, w in enumerate(src)]  # one word in five replaced
    res = scan(det, " ".join(out))
    best = res.best
    assert best is not None and best.work.title == "re" and best.verdict == "copy"
    kinds = {s.kind for s in best.spans}
    assert "near" in kinds
    assert best.signals["copied_words"] >= 0.7 * len(src)
    assert best.signals["longest_run_words"] < config.VERBATIM_MIN_WORDS


def test_shuffled_sentences_give_one_span_each(txt: tuple[Detector, Path]) -> None:
    det, _ = txt
    passage = " ".join(doc_words("configparser")[100:300])
    sentences = [s for s in re.split(r"(?<=[.:;])\s+", passage) if len(s.split()) >= 8]
    assert len(sentences) >= 4
    random.Random(3).shuffle(sentences)
    text = " ".join(sentences)
    best = scan(det, text).best
    assert best is not None and best.work.title == "configparser" and best.verdict == "copy"
    spans = [s for s in best.spans if s.kind in ("verbatim", "near")]
    assert len(spans) >= 3
    for s in spans:  # each span's output text is really in the work, word for word
        assert same_words(s.output_text, s.work_text) or s.kind == "near"


def test_scrambled_words_match_as_paraphrase_by_meaning(txt: tuple[Detector, Path]) -> None:
    """Every sentence's words reversed: no word order survives, the content does."""
    det, _ = txt
    passage = " ".join(doc_words("argparse")[0:120])
    scrambled = " ".join(" ".join(reversed(s.split())) for s in re.split(r"(?<=[.:])\s+", passage))
    best = scan(det, scrambled).best
    assert best is not None and best.work.title == "argparse"
    assert best.verdict in ("similar", "copy")
    assert any(s.kind == "paraphrase" for s in best.spans)


def test_common_text_is_discounted_and_said_so(txt: tuple[Detector, Path]) -> None:
    det, _ = txt
    res = scan(det, ZEN)
    zen_matches = [m for m in res.matches if m.work.title in WITH_ZEN]
    assert zen_matches
    for m in zen_matches:
        assert m.spans and all(s.discounted and s.shared_by == len(WITH_ZEN) for s in m.spans)
        assert m.signals["copied_words"] == 0 and m.verdict == "unrelated"
    # the same works still count their own text
    own = " ".join(doc_words("socket")[50:110])
    best = scan(det, own).best
    assert best is not None and best.work.title == "socket" and best.verdict == "copy"
    assert not any(s.discounted for s in best.spans)


def test_fpr_is_calibrated_on_the_collection(txt: tuple[Detector, Path]) -> None:
    det, root = txt
    copy = scan(det, " ".join(doc_words("pdb")[900:1000]))
    unrelated = scan(det, module_doc("heapq"))
    cal = copy.calibration
    assert cal is not None and cal == unrelated.calibration
    assert cal.works == len(WORKS) and cal.queries == config.CALIBRATION_QUERIES
    # the null is edited as outputs are, every kind of edit in it
    assert {edit for edit, _ in cal.makeup} == set(TEXT_EDITS) and sum(n for _, n in cal.makeup) == cal.queries
    assert (cal.copy_level, cal.similar_level) == (config.COPY_LEVEL, config.SIMILAR_LEVEL)
    assert copy.best is not None and copy.best.fpr is not None and unrelated.best is not None
    assert copy.best.fpr == pytest.approx(1 / (cal.queries + 1))  # no unrelated output as unusual
    assert copy.best.null_size == cal.queries and copy.best.fpr_upper == pytest.approx(upper_bound(0, cal.queries))
    assert copy.best.verdict == "copy" and "copied_words" in copy.best.reason
    assert unrelated.best.fpr is not None and unrelated.best.fpr > 10 * copy.best.fpr
    assert unrelated.verdict == "unrelated" and unrelated.best.reason
    assert all(0 < m.fpr <= m.fpr_upper <= 1 for m in unrelated.matches)
    with Collection.open(Store(root / "home").path("txt")) as coll:
        stored = coll.calibration("text")
        assert stored is not None and stored[0] == coll.generation == cal.generation
        assert len(stored[1]["rows"]) == cal.queries and "copied_words" in stored[1]["columns"]


def test_json_contract_of_a_text_match(txt: tuple[Detector, Path]) -> None:
    det, _ = txt
    excerpt = " ".join(doc_words("unittest")[20:80])
    d = json.loads(json.dumps(scan(det, "Some words first. " + excerpt).to_dict()))
    m = d["matches"][0]
    assert {"coverage", "longest_run_words", "fpr", "spans", "signals", "score", "verdict"} <= set(m)
    assert set(m["spans"][0]) >= {"output_start", "output_end", "work_start", "work_end", "kind", "words"}
    assert m["spans"][0]["kind"] in ("verbatim", "near", "paraphrase")
    assert d["calibration"]["queries"] > 0 and d["calibration"]["modality"] == "text"


def test_a_legacy_encoded_output_says_how_it_was_decoded(txt: tuple[Detector, Path]) -> None:
    det, root = txt
    excerpt = " ".join(doc_words("unittest")[20:80])
    text = "Caf\u00e9 cr\u00e8me, na\u00efve \u2013 \u201cd\u00e9j\u00e0 vu\u201d, r\u00e9sum\u00e9. " + excerpt
    path = root / "cp1252-output.txt"
    path.write_bytes(text.encode("cp1252"))
    res = det.scan("txt", [path])[0]
    assert res.encoding == "cp1252" and res.to_dict()["encoding"] == "cp1252"
    best = res.best
    assert best is not None and best.work.title == "unittest" and best.verdict == "copy"
    # offsets count characters of the decoded text, not bytes of the file
    span = max(best.spans, key=lambda s: s.words)
    assert text[span.output_start:span.output_end] == span.output_text
    assert same_words(span.output_text, excerpt)
    assert scan(det, excerpt).encoding == "utf-8"


@pytest.mark.parametrize("text", ["", "   \n\t ", "?! ... -- ;;", "\u200b\u200b"])
def test_outputs_without_words_are_refused(txt: tuple[Detector, Path], text: str) -> None:
    det, _ = txt
    with pytest.raises(InputError, match="no words|empty"):
        scan(det, text)


def test_huge_outputs_are_refused_with_the_limit_named(txt: tuple[Detector, Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    det, _ = txt
    gen = det.manifest("txt").generation
    big = "word " * (10 * 1024 * 1024)  # 50 MB
    with pytest.raises(InputError, match="MAX_SCAN_WORDS"):
        scan(det, big)
    monkeypatch.setattr(config, "MAX_SCAN_WORDS", 50)
    with pytest.raises(InputError, match=r"has \d+ words; one scan takes at most 50"):
        scan(det, " ".join(doc_words("pdb")[:60]))
    assert det.manifest("txt").generation == gen


def test_one_word_works_and_outputs_give_results(tmp_path: Path) -> None:
    works = tmp_path / "w"
    works.mkdir()
    (works / "one.txt").write_text("Hello.", encoding="utf-8")
    (works / "doc.txt").write_text(module_doc("json"), encoding="utf-8")
    det = Detector(tmp_path / "home")
    det.create("t", ["minilm", "shingles"])
    assert len(det.add("t", [works]).added) == 2
    res = det.scan_item("t", text_item("hello"))
    assert res.best is not None and res.best.work.title == "one"
    res = det.scan_item("t", text_item(" ".join(doc_words("json")[10:70])))
    assert res.best is not None and res.best.work.title == "doc" and res.best.verdict == "copy"


def test_too_few_works_means_no_fpr(tmp_path: Path) -> None:
    works = tmp_path / "w"
    works.mkdir()
    (works / "doc.txt").write_text(module_doc("csv"), encoding="utf-8")
    det = Detector(tmp_path / "home")
    det.create("t", ["minilm", "shingles"])
    det.add("t", [works])
    res = det.scan_item("t", text_item(" ".join(doc_words("csv")[10:70])))
    assert res.calibration is None and res.best is not None and res.best.fpr is None
    assert det.calibrate("t") == []
    # a second, unrelated work: now there is something to calibrate against
    (works / "other.txt").write_text(module_doc("pdb"), encoding="utf-8")
    det.add("t", [works])
    res = det.scan_item("t", text_item(" ".join(doc_words("csv")[10:70])))
    assert res.calibration is not None and res.calibration.works == 2 and res.best.fpr is not None


def test_near_duplicates_are_grouped(tmp_path: Path) -> None:
    works = tmp_path / "w"
    works.mkdir()
    body = module_doc("configparser")
    (works / "first.txt").write_text(body, encoding="utf-8")
    (works / "second-edition.txt").write_text(body.replace("section", "chapter", 3) + "\nRevised.", encoding="utf-8")
    (works / "other.txt").write_text(module_doc("pdb"), encoding="utf-8")
    det = Detector(tmp_path / "home")
    det.create("t", ["minilm", "shingles"])
    det.add("t", [works])
    ids = {w.title: w.id for w in det.works("t")}
    with Collection.open(Store(tmp_path / "home").path("t")) as coll:
        groups = near_duplicate_groups(coll, list(ids.values()))
    assert groups[ids["first"]] == groups[ids["second-edition"]] == {ids["first"], ids["second-edition"]}
    assert groups[ids["other"]] == {ids["other"]}


def test_cli_shows_spans_side_by_side(txt: tuple[Detector, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _, root = txt
    excerpt = " ".join(doc_words("pdb")[100:150])
    out = tmp_path / "out.txt"
    out.write_text(" ".join(doc_words("heapq")[:80]) + " " + excerpt, encoding="utf-8")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xfa" + bytes(range(128, 256)) * 4)
    assert main(["--home", str(root / "home"), "scan", "txt", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"[verbatim, {len(word_keys(excerpt)[0])} words; output" in shown and "false-positive rate" in shown
    first_words = " ".join(excerpt.split()[:4])
    assert any(line.count(first_words) == 2 and " | " in line for line in shown.splitlines())
    code = main(["--home", str(root / "home"), "scan", "txt", str(bad)])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    if code == 2:
        assert "bad.txt" in err


def test_each_output_window_gets_its_own_best_work_and_passage() -> None:
    """A reworded excerpt buried in other text is one window's match: its source must be made a
    candidate, and its passage aligned, even when other works match the filler windows better."""
    from detector.textscan import _Hits, _similar_passages, _works_by_window

    hits: dict[str, _Hits] = {}
    # windows 0-3 are filler: ten "stylish" works match them at 0.70-0.79; window 4 holds the
    # excerpt, whose source matches it best (0.66) and matches nothing else well
    for k in range(10):
        hits[f"style{k}"] = _Hits(passages=[(0.70 + k / 100, w, 1000 * k, 1000 * k + 600) for w in range(4)]
                                  + [(0.40, 4, 1000 * k, 1000 * k + 600)])
    hits["source"] = _Hits(passages=[(0.62, w, 50_000 + 700 * w, 50_600 + 700 * w) for w in range(4)]
                           + [(0.66, 4, 90_000, 90_600)])
    order = _works_by_window(hits)
    by_best = sorted(hits, key=lambda w: -max(c for c, *_ in hits[w].passages))
    assert "source" not in by_best[: config.ALIGN_WORKS]  # what ranking by best cosine did
    assert "source" in order[: config.ALIGN_WORKS] and order[0] == "style9"
    assert sorted(order) == sorted(hits)  # every work once
    # a work's passages: the excerpt window's best is kept though eight others score higher
    passages = [(0.70 - d, w, 10_000 * w + 1000 * d * 100, 10_000 * w + 1000 * d * 100 + 600)
                for w in range(4) for d in (0.0, 0.01)] + [(0.60, 4, 90_000, 90_600)]
    assert (0.60, 4, 90_000, 90_600) not in sorted(passages, reverse=True)[:5]  # the best five overall
    chosen = _similar_passages(passages, 5)
    assert len(chosen) == 5 and (0.60, 90_000, 90_600) in chosen
    assert {c for c, *_ in chosen} == {0.70, 0.60}  # each window's best, before any second best
    assert _similar_passages([(0.9, 0, 5, 9), (0.8, 1, 5, 9), (0.7, 1, 20, 30)], 8) == [(0.9, 5, 9), (0.7, 20, 30)]
