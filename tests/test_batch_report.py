"""Batch scans and evidence reports: manifests, skipped lines, per-work rates with Wilson
intervals, provenance, the digest and `verify`, resuming an interrupted batch, `replay`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector import Detector
from detector.batch import RESULTS, read_manifest
from detector.cli import main
from detector.report import verify, wilson

from .conftest import edited_copy, module_doc


def test_wilson_interval_known_values() -> None:
    low, high = wilson(5, 10)
    assert round(low, 4) == 0.2366 and round(high, 4) == 0.7634
    low, high = wilson(0, 10)
    assert low == 0.0 and round(high, 4) == 0.2775
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(10, 10)
    assert round(low, 4) == 0.7225 and high == pytest.approx(1.0)


def _batch(corpus: dict, tmp_path: Path) -> Path:
    """A manifest: 2 copies of rocket (realistic, adversarial), 1 unrelated photo, 1 text
    excerpt of csv's docs, 1 unrelated text, and 4 bad lines."""
    out = tmp_path / "outputs"
    out.mkdir()
    edited_copy(corpus["works"] / "rocket.jpg", out / "rocket-1.jpg")
    edited_copy(corpus["works"] / "rocket.jpg", out / "rocket-2.jpg")
    (out / "hubble.jpg").write_bytes((corpus["other"] / "hubble_deep_field.jpg").read_bytes())
    (out / "fake.png").write_bytes(b"this is not a picture")
    excerpt = " ".join(module_doc("csv").split()[5:80])
    lines = [
        {"output": "outputs/rocket-1.jpg", "model": "imagegen", "model_version": "1", "prompt_type": "realistic"},
        {"output": "outputs/rocket-2.jpg", "model": "imagegen", "model_version": "2", "prompt_type": "adversarial",
         "prompt": "the rocket photo from scikit-image", "seed": 7, "date": "2026-11-01"},
        {"output": "outputs/hubble.jpg", "model": "imagegen", "model_version": "1", "prompt_type": "realistic"},
        {"text": excerpt, "id": "story-1", "model": "textgen", "prompt_type": "adversarial"},
        {"text": module_doc("heapq"), "model": "textgen", "prompt_type": "realistic"},
    ]
    rows = [json.dumps(x) for x in lines]
    rows += [
        "{not json",
        json.dumps({"output": "outputs/missing.png"}),
        json.dumps({"output": "outputs/fake.png"}),
        json.dumps({"text": "hello", "prompt_type": "sneaky"}),
    ]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return manifest


def test_manifest_lines_are_parsed_or_skipped_with_reasons(corpus: dict, tmp_path: Path) -> None:
    records = list(read_manifest(_batch(corpus, tmp_path)))
    assert len(records) == 9
    bad = {r.line: r.reason for r in records if hasattr(r, "reason")}
    assert set(bad) == {6, 9}  # missing and fake files are found out when scanned
    assert "not valid JSON" in bad[6] and "prompt_type" in bad[9] and "sneaky" in bad[9]
    first = records[0]
    assert first.path.endswith("outputs/rocket-1.jpg") and first.generator == "imagegen 1"
    assert records[3].id == "story-1" and records[3].text


def test_batch_report_verify_and_replay(home: Path, corpus: dict, tmp_path: Path, capsys) -> None:
    manifest = _batch(corpus, tmp_path)
    report_dir = tmp_path / "report"
    args = ["--home", str(home), "scan", "ref", "--manifest", str(manifest), "--report", str(report_dir)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "digest" in out and "rocket" in out
    report = json.loads((report_dir / "report.json").read_text())
    assert report["schema"] == "factor4-report/1"
    s = report["summary"]
    assert s["inputs"] == 9 and s["scanned"] == {"image": 3, "text": 2} and s["skipped"] == 4
    reasons = {x["line"]: x["reason"] for x in report["skipped"]}
    assert set(reasons) == {6, 7, 8, 9}
    assert "missing.png" in reasons[7] and "not a readable image" in reasons[8]
    by_title = {w["work"]["title"]: w for w in report["works"]}
    rocket = by_title["rocket"]
    assert rocket["copy"]["count"] == 2 and rocket["copy"]["outputs"] == 3
    low, high = wilson(2, 3)
    assert rocket["copy"]["ci95"] == [round(low, 6), round(high, 6)]
    assert rocket["by_prompt_type"]["adversarial"]["copy"]["count"] == 1
    assert rocket["by_prompt_type"]["realistic"]["copy"] == {"count": 1, "outputs": 2, "rate": 0.5,
                                                            "ci95": [round(x, 6) for x in wilson(1, 2)]}
    assert set(rocket["by_generator"]) == {"imagegen 1", "imagegen 2"}
    assert len(rocket["examples"]) == 2 and rocket["examples"][0]["match"]["region"] is not None
    csv = by_title["csv"]
    assert csv["copy"]["count"] == 1 and csv["examples"][0]["id"] == "story-1"
    assert csv["examples"][0]["match"]["spans"]
    # provenance: encoders with weights hashes, versions, the command, collection hashes
    prov = report["provenance"]
    assert prov["factor4"] and prov["command"][:2] == ["factor4", "--home"]
    assert any(e["channel"] == "sscd" and len(e["weights_sha256"]) == 64 for e in prov["encoders"])
    assert len(report["collection"]["manifest_sha256"]) == 64
    assert {w["title"] for w in report["collection"]["works"]} >= {"rocket", "csv"}
    results = [json.loads(x) for x in (report_dir / RESULTS).read_text().splitlines()]
    assert all(len(r["sha256"]) == 64 for r in results if "result" in r)
    html = (report_dir / "report.html").read_text()
    assert "rocket" in html and "http://" not in html and "https://" not in html
    assert "only looks like" in report["summary"]["counting"] and "How the counts are made" in html
    # verify: unchanged, then one altered byte is found and named
    assert verify(report_dir).ok
    assert main(["verify", str(report_dir)]) == 0
    body = (report_dir / "report.json").read_text()
    (report_dir / "report.json").write_text(body.replace('"count": 2', '"count": 0', 1))
    v = verify(report_dir)
    assert not v.ok and v.changed == ("report.json",)
    assert main(["verify", str(report_dir)]) == 1
    assert "report.json was changed" in capsys.readouterr().out
    (report_dir / "report.json").write_text(body)
    # replay: the same findings from the recorded inputs
    assert main(["--home", str(home), "replay", str(report_dir)]) == 0
    assert "5 identical" in capsys.readouterr().out
    # an output altered since: replay says so and fails
    (tmp_path / "outputs" / "rocket-2.jpg").write_bytes((corpus["works"] / "coffee.png").read_bytes())
    assert main(["--home", str(home), "replay", str(report_dir)]) == 1
    assert "changed since the batch" in capsys.readouterr().out


def test_interrupted_batch_resumes_without_rescoring(home: Path, corpus: dict, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from detector.batch import folder_records, run_batch
    from detector.report import build_report

    outputs = tmp_path / "outs"
    outputs.mkdir()
    for i, name in enumerate(["rocket.jpg", "coffee.png", "astronaut.png", "chelsea.png"]):
        edited_copy(corpus["works"] / name, outputs / f"{i}-{Path(name).stem}.jpg")
    det = Detector(home)
    folder = tmp_path / "rep"
    run_batch(det, "ref", folder_records(outputs), folder)
    rows = (folder / RESULTS).read_bytes().splitlines(keepends=True)
    assert len(rows) == 4
    # as if killed while writing the third line
    (folder / RESULTS).write_bytes(b"".join(rows[:2]) + rows[2][:25])
    scanned: list[str] = []
    real = Detector.scan_item

    def counting(self, name, item, top=5):
        scanned.append(item.name)
        return real(self, name, item, top)

    monkeypatch.setattr(Detector, "scan_item", counting)
    run = run_batch(det, "ref", folder_records(outputs), folder)
    assert run.resumed == 2 and run.scanned == 2 and len(scanned) == 2
    assert sorted(Path(n).name for n in scanned) == ["2-astronaut.jpg", "3-chelsea.jpg"]
    lines = [json.loads(x) for x in (folder / RESULTS).read_text().splitlines()]
    assert [r["line"] for r in lines] == [1, 2, 3, 4]
    report = build_report(det, folder)
    assert report.summary["scanned"] == {"image": 4}
    assert {f.work["title"] for f in report.findings if f.copy.count} == {"rocket", "coffee", "astronaut", "chelsea"}
    assert report.to_dict() == json.loads((folder / "report.json").read_text())
    assert report.digest == json.loads((folder / "DIGEST").read_text())["digest"]
    # a different batch in the same folder is refused, nothing is overwritten
    other = tmp_path / "others"
    other.mkdir()
    edited_copy(corpus["works"] / "rocket.jpg", other / "x.jpg")
    with pytest.raises(Exception, match="other inputs"):
        run_batch(det, "ref", folder_records(other), folder)
    assert len((folder / RESULTS).read_text().splitlines()) == 4


def test_batch_cli_errors(home: Path, tmp_path: Path, capsys) -> None:
    assert main(["--home", str(home), "scan", "ref", "--manifest", str(tmp_path / "nope.jsonl"),
                 "--report", str(tmp_path / "r")]) == 2
    assert "cannot read the manifest" in capsys.readouterr().err
    assert main(["--home", str(home), "scan", "ref", "--manifest", str(tmp_path / "nope.jsonl")]) == 2
    assert "--report" in capsys.readouterr().err
    assert main(["verify", str(tmp_path)]) == 2
    assert "DIGEST" in capsys.readouterr().err
