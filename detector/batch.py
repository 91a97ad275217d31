"""Batch scans: many AI outputs against one collection, streamed to a report folder.

The outputs come from a folder or a JSONL manifest, one output per line::

    {"output": "outputs/0001.png", "model": "imagegen", "model_version": "2.1",
     "prompt": "a cat on a sofa", "prompt_type": "realistic", "seed": 7, "date": "2026-10-01"}
    {"text": "Once upon a time ...", "model": "textgen", "prompt_type": "adversarial"}

`output` is a file path (relative to the manifest's folder) or `text` the output itself; every
other key is optional context: `id`, `model`, `model_version`, `prompt`, `prompt_type`
(`realistic` or `adversarial`, e.g. a prompt that quotes the work), `seed`, `date`.

`run_batch` writes, into the report folder:

- `inputs.jsonl`: the outputs to scan, one normalised record per line (what `replay` re-runs);
- `results.jsonl`: one line per input, appended and flushed as each is scanned: its scan
  result, or why it was skipped (malformed line, missing file, wrong type). Memory stays flat in
  the number of outputs, and an interrupted batch resumes where it stopped: lines already in
  `results.jsonl` are not scanned again;

then `detector.report` turns them into `report.json`, `report.html` and `DIGEST`.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from detector import config, safejson
from detector.errors import Factor4Error, InputError
from detector.progress import progress

log = logging.getLogger(__name__)

PromptType = Literal["realistic", "adversarial"]
PROMPT_TYPES: tuple[str, ...] = ("realistic", "adversarial")
INPUTS = "inputs.jsonl"
RESULTS = "results.jsonl"
BATCH = "batch.json"
#: Keys a manifest line may have besides `output` / `text`.
CONTEXT_KEYS = ("id", "model", "model_version", "prompt", "prompt_type", "seed", "date")


@dataclass(frozen=True)
class OutputRecord:
    """One output to scan: a file or a text, with what is known of how it was made."""

    line: int
    id: str
    path: str | None = None
    text: str | None = None
    model: str | None = None
    model_version: str | None = None
    prompt: str | None = None
    prompt_type: PromptType | None = None
    seed: int | str | None = None
    date: str | None = None

    @property
    def generator(self) -> str:
        """"model version", or "unknown"."""
        if not self.model:
            return "unknown"
        return f"{self.model} {self.model_version}" if self.model_version else self.model

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Skipped:
    """A manifest line that could not be scanned, and why."""

    line: int
    reason: str
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _context(raw: dict[str, Any], line: int) -> dict[str, Any]:
    """The optional context keys of a manifest line, checked."""
    out: dict[str, Any] = {}
    for key in CONTEXT_KEYS:
        value = raw.get(key)
        if value is None:
            continue
        if key == "seed":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise InputError(f"line {line}: 'seed' must be an integer or a string, got {value!r}")
        elif not isinstance(value, str) or not value.strip():
            raise InputError(f"line {line}: {key!r} must be a non-empty string, got {value!r}")
        out[key] = value.strip() if isinstance(value, str) else value
    if out.get("prompt_type") is not None and out["prompt_type"] not in PROMPT_TYPES:
        raise InputError(f"line {line}: 'prompt_type' must be one of {', '.join(PROMPT_TYPES)}, "
                         f"got {out['prompt_type']!r}")
    unknown = sorted(set(raw) - set(CONTEXT_KEYS) - {"output", "text"})
    if unknown:
        raise InputError(f"line {line}: unknown keys {', '.join(map(repr, unknown))}; a line has 'output' or "
                         f"'text' and optionally {', '.join(CONTEXT_KEYS)}")
    return out


def parse_line(raw_line: str, line: int, base: Path) -> OutputRecord:
    """One manifest line as a record; InputError naming the line and what is wrong."""
    raw = safejson.loads(raw_line, f"line {line}")  # JsonLimitError (an InputError) names the line
    if not isinstance(raw, dict):
        raise InputError(f"line {line}: must be a JSON object, got {type(raw).__name__}")
    has_output, has_text = raw.get("output") is not None, raw.get("text") is not None
    if has_output == has_text:
        raise InputError(f"line {line}: give exactly one of 'output' (a file path) or 'text'")
    ctx = _context(raw, line)
    record_id = str(ctx.pop("id", f"line-{line}"))
    if has_output:
        if not isinstance(raw["output"], str) or not raw["output"].strip():
            raise InputError(f"line {line}: 'output' must be a file path")
        path = Path(raw["output"]).expanduser()
        path = path if path.is_absolute() else base / path
        return OutputRecord(line, record_id, path=str(path), **ctx)
    if not isinstance(raw["text"], str):
        raise InputError(f"line {line}: 'text' must be a string")
    return OutputRecord(line, record_id, text=raw["text"], **ctx)


def read_manifest(path: str | os.PathLike[str]) -> Iterator[OutputRecord | Skipped]:
    """Records of a JSONL manifest, streamed; malformed lines come out as `Skipped`. Blank lines
    and lines starting with # are ignored."""
    manifest = Path(path)
    try:
        fh = manifest.open(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{manifest}: cannot read the manifest ({exc.strerror})") from exc
    with fh:
        try:
            for n, raw in enumerate(fh, 1):
                if not raw.strip() or raw.lstrip().startswith("#"):
                    continue
                try:
                    yield parse_line(raw, n, manifest.parent)
                except InputError as exc:
                    yield Skipped(n, str(exc))
        except UnicodeDecodeError as exc:
            raise InputError(f"{manifest}: not UTF-8 text ({exc.reason}); save the manifest as UTF-8") from exc


def folder_records(folder: str | os.PathLike[str]) -> Iterator[OutputRecord]:
    """A record for every supported file in *folder* (recursively, sorted; or for *folder*
    itself if it is a file), its id the path relative to the folder."""
    from detector.core import expand_paths

    base = Path(folder) if Path(folder).is_dir() else Path(folder).parent
    for n, path in enumerate(expand_paths([folder]), 1):
        yield OutputRecord(n, str(Path(path).relative_to(base)), path=str(path))


@dataclass(frozen=True)
class BatchRun:
    """What `run_batch` did."""

    folder: Path
    scanned: int
    skipped: int
    resumed: int
    stopped: bool = False  # asked to stop before the end: run it again to resume

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "scanned": self.scanned, "skipped": self.skipped,
                "resumed": self.resumed, "stopped": self.stopped}


def entry_line(entry: dict[str, Any]) -> int:
    """The manifest line of an inputs.jsonl entry (a record, or a skipped line)."""
    return int(entry["skipped"]["line"] if "skipped" in entry else entry["line"])


def _done_lines(results: Path) -> set[int]:
    """Lines already in results.jsonl; a torn last line (a crash mid-write) is cut off."""
    done: set[int] = set()
    if not results.exists():
        return done
    good = 0
    with results.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            try:
                done.add(int(json.loads(raw)["line"]))
            except (ValueError, KeyError, TypeError):
                break
            good += len(raw)
    if good != results.stat().st_size:
        log.warning("%s: cutting off a partly written last line", results)
        with results.open("rb+") as fh:
            fh.truncate(good)
    return done


def trim_heap() -> None:
    """Give freed heap memory back to the system (glibc's `malloc_trim`). Text scans free many
    mid-sized buffers that glibc otherwise keeps: RSS rose by ~300 MiB over 2,000 text outputs
    without this, and stays flat with it (scripts/bench_batch.py). A no-op elsewhere."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc: Any = None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_batch_settings(folder: Path) -> dict[str, Any]:
    """The batch's collection, match count, start time and command line (batch.json)."""
    try:
        body = json.loads((folder / BATCH).read_text(encoding="utf-8"))
        if not isinstance(body, dict) or not {"collection", "top"} <= set(body):
            raise ValueError("missing keys")
        return body
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder}: no readable {BATCH} ({exc}); is this a factor4 batch folder?") from exc


def run_batch(det: Any, collection: str, records: Iterator[OutputRecord | Skipped], folder: str | os.PathLike[str],
              top: int = config.TOP_MATCHES, show_progress_bar: bool | None = None,
              command: list[str] | None = None, stop: Callable[[], bool] | None = None) -> BatchRun:
    """Scan every record against *collection*, appending to *folder*/results.jsonl. A folder
    that already holds results of the same inputs is resumed; one holding other inputs (or
    scanned against another collection) is refused. *stop*, when given, is asked before each
    output; when it answers True the run returns early (`BatchRun.stopped`), and running it
    again resumes."""
    import datetime as dt
    import sys

    from detector.works import read_item, text_item

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    det.manifest(collection)  # a missing collection fails before anything is written
    if (out / BATCH).exists():
        before = read_batch_settings(out)
        if before["collection"] != collection or int(before["top"]) != top:
            raise InputError(f"{out} holds a batch against collection {before['collection']!r} with --top "
                             f"{before['top']}; resume it with the same, or choose an empty folder")
    else:
        started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"collection": collection, "top": top, "started_utc": started, "command": command or sys.argv}
        from indexes import write_atomic

        write_atomic(out / BATCH, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())
    inputs_path, results_path = out / INPUTS, out / RESULTS
    # the inputs are written whole first (streamed), so a resumed run can check they are the same
    fresh = out / (INPUTS + ".new")
    try:
        with fresh.open("w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps({"skipped": rec.to_dict()} if isinstance(rec, Skipped) else rec.to_dict(),
                                    sort_keys=True) + "\n")
    except BaseException:
        fresh.unlink(missing_ok=True)
        raise
    if inputs_path.exists() and results_path.exists():
        if sha256_file(inputs_path) != sha256_file(fresh):
            fresh.unlink()
            raise InputError(f"{out} holds the results of other inputs; choose an empty folder for this batch")
        fresh.unlink()
    else:
        os.replace(fresh, inputs_path)
    done = _done_lines(results_path)
    total = sum(1 for _ in inputs_path.open(encoding="utf-8"))
    scanned = skipped = 0
    with results_path.open("a", encoding="utf-8") as res, inputs_path.open(encoding="utf-8") as inp, \
            progress(total, "scanning outputs", show_progress_bar, unit="output") as bar:
        for raw in inp:
            if stop is not None and stop():
                log.info("batch %s: stopped after %d outputs; run it again to resume", out, scanned + skipped)
                return BatchRun(out, scanned, skipped, len(done), stopped=True)
            entry = json.loads(raw)
            line = entry_line(entry)
            if line in done:
                bar.update(1)
                continue
            if "skipped" in entry:
                row: dict[str, Any] = {"line": line, "skipped": entry["skipped"]["reason"]}
            else:
                rec = OutputRecord(**entry)
                try:
                    if rec.path is not None:
                        item = read_item(rec.path)
                    else:
                        item = text_item(rec.text or "", rec.id)
                    result = det.scan_item(collection, item, top)
                    row = {"line": line, "id": rec.id, "sha256": item.sha256, "result": result.to_dict()}
                    scanned += 1
                except Factor4Error as exc:
                    row = {"line": line, "id": rec.id, "skipped": str(exc)}
            if "skipped" in row:
                skipped += 1
            res.write(json.dumps(row, sort_keys=True) + "\n")
            res.flush()
            bar.update(1)
            if (scanned + skipped) % config.BATCH_TRIM_EVERY == 0:
                trim_heap()
    log.info("batch %s: %d scanned, %d skipped, %d done before", out, scanned, skipped, len(done))
    return BatchRun(out, scanned, skipped, len(done))
