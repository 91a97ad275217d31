"""Batch scans as background jobs: an evidence report (`detector.report`) over many outputs.

A job lives in its tenant's folder, `<home>/tenants/<tenant>/batches/<id>/`:

- `job.json` — what was asked and where it stands (written atomically);
- `outputs/` — the uploaded output files, as uploaded;
- `records.jsonl` — the outputs to scan (uploaded files and texts), and manifest lines skipped
  with the reason;
- `report/` — the batch folder of `detector.batch.run_batch` and `detector.report.build_report`
  (results.jsonl, report.json, report.html, DIGEST), which `factor4 verify` and `factor4 replay`
  read.

A job is created whole (in a temporary folder, renamed into place) before the request that
submits it is answered, so an acknowledged job survives a crash. One worker thread per
process runs the jobs in order; at start-up it takes up every job left `queued` or `running`,
and `run_batch` resumes a half-done one without re-scanning what it finished.
"""

from __future__ import annotations

import collections
import datetime as dt
import io
import json
import logging
import os
import queue
import re
import secrets
import shutil
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from detector.batch import OutputRecord, Skipped, parse_line, run_batch
from detector.errors import Factor4Error, InputError
from detector.report import build_report
from indexes import write_atomic
from service.access import CollectionRef, Detectors
from service.errors import ServiceError
from service.tenancy import check_tenant, tenant_home
from service.uploads import safe_name

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "done", "failed"]
JOB = "job.json"
RECORDS = "records.jsonl"
OUTPUTS = "outputs"
REPORT = "report"
#: The files of a finished job's report folder, as `factor4 verify` expects them.
REPORT_FILES = ("batch.json", "inputs.jsonl", "results.jsonl", "report.json", "report.html", "DIGEST")
_ID = re.compile(r"^[0-9a-f]{16}$")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Job:
    """A batch scan: whose, against which collection, how far it got."""

    id: str
    tenant: str
    owner: str  # the collection's owner (another tenant for a public collection)
    collection: str
    label: str  # the collection as the tenant names it: NAME, or OWNER/NAME
    status: JobStatus
    outputs: int  # manifest lines and files to scan, including those skipped on arrival
    created_utc: str
    started_utc: str | None = None
    finished_utc: str | None = None
    error: str | None = None
    summary: dict[str, Any] | None = None
    digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def jobs_root(home: Path, tenant: str) -> Path:
    return tenant_home(home, tenant) / "batches"


def _records_from_upload(files: list[tuple[str, bytes]], manifest: bytes | None, outputs: Path,
                         max_outputs: int) -> list[OutputRecord | Skipped]:
    """The records of a submitted batch. Manifest lines name uploaded files by their file name
    (`"output": "cat.png"`) or carry the text; a line naming anything else is skipped."""
    names: dict[str, str] = {}
    for name, _ in files:
        safe = safe_name(name, len(names))
        if safe in names.values():
            raise ServiceError(422, "invalid_request", f"two uploaded files are named {safe!r}; give each output "
                               "file its own name")
        names[name] = safe
    records: list[OutputRecord | Skipped] = []
    if manifest is None:
        records = [OutputRecord(n, name, path=str(outputs / safe)) for n, (name, safe) in enumerate(names.items(), 1)]
    else:
        try:
            text = manifest.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ServiceError(422, "bad_manifest", f"the manifest is not UTF-8 ({exc.reason}); save it as "
                               "UTF-8 JSONL") from exc
        by_path = {str(outputs / safe): name for name, safe in names.items()}
        used: set[str] = set()
        for n, raw in enumerate(text.splitlines(), 1):
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            try:
                rec = parse_line(raw, n, outputs)
            except InputError as exc:
                records.append(Skipped(n, str(exc)))
                continue
            if rec.path is not None:
                given = json.loads(raw)["output"]  # parse_line accepted it within the limits
                safe = names.get(given)
                if safe is None:
                    records.append(Skipped(n, f"line {n}: 'output' {given!r} is not one of the uploaded files "
                                              "(send it as a 'file' field and name it by its file name)", rec.id))
                    continue
                rec = replace(rec, path=str(outputs / safe))
                used.add(rec.path)
            records.append(rec)
        unused = sorted(name for path, name in by_path.items() if path not in used)
        if unused:
            raise ServiceError(422, "bad_manifest", f"uploaded files not named by any manifest line: "
                               f"{', '.join(unused[:5])}{' …' if len(unused) > 5 else ''}")
    if not records:
        raise ServiceError(422, "invalid_request", "an empty batch: send output files as 'file' fields, and/or "
                           "a JSONL 'manifest' with one output per line")
    if len(records) > max_outputs:
        raise ServiceError(422, "batch_too_large", f"{len(records)} outputs exceed max_batch_outputs = "
                           f"{max_outputs} (FACTOR4_MAX_BATCH_OUTPUTS); split the batch")
    return records


def _load_job(folder: Path) -> Job:
    return Job(**json.loads((folder / JOB).read_text(encoding="utf-8")))


def _read_records(folder: Path) -> Iterator[OutputRecord | Skipped]:
    with (folder / RECORDS).open(encoding="utf-8") as fh:
        for raw in fh:
            entry = json.loads(raw)
            yield Skipped(**entry["skipped"]) if "skipped" in entry else OutputRecord(**entry)


class Jobs:
    """The batch jobs of every tenant under *home*, and the worker thread that runs them."""

    def __init__(self, home: Path, detectors: Detectors, max_pending: int = 20) -> None:
        self.home = home
        self.detectors = detectors
        #: Most batches one tenant may have queued or running (429 too_many_batches beyond).
        self.max_pending = max_pending
        self._pending: collections.Counter[str] = collections.Counter()
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # job.json updates
        self._worker: threading.Thread | None = None

    # -- the worker -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker, queueing the jobs an earlier process left unfinished (oldest first)."""
        left: list[Job] = []
        tenants = self.home / "tenants"
        if tenants.is_dir():
            for tdir in sorted(tenants.iterdir()):
                root = tdir / "batches"
                if root.is_dir():
                    for stale in root.glob(".*"):  # a submission or deletion a crash cut short
                        shutil.rmtree(stale, ignore_errors=True)
                    left += [j for j in self.list(tdir.name) if j.status in ("queued", "running")]
        for job in sorted(left, key=lambda j: j.created_utc):
            log.info("batch %s of %s left %s by an earlier run: queued again", job.id, job.tenant, job.status)
            self._pending[job.tenant] += 1
            self._queue.put((job.tenant, job.id))
        self._worker = threading.Thread(target=self._work, name="factor4-batches", daemon=True)
        self._worker.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the output being scanned; an unfinished job is resumed at the next start."""
        self._stop.set()
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout)

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._queue.get()
            if item is None:
                return
            tenant, job_id = item
            try:
                self._run(tenant, job_id)
            except Exception:  # a job's failure must not end the worker
                log.exception("batch %s of %s failed", job_id, tenant)
                self._update(tenant, job_id, status="failed", finished_utc=_now(),
                             error="internal error while scanning; the service log has the details")
            finally:
                with self._lock:
                    self._pending[tenant] -= 1

    def _run(self, tenant: str, job_id: str) -> None:
        job = self.get(tenant, job_id)
        if job.status not in ("queued", "running"):
            return
        folder = jobs_root(self.home, tenant) / job_id
        det = self.detectors.get(job.owner)
        job = self._update(tenant, job_id, status="running", started_utc=job.started_utc or _now())
        where = f"public/{job.owner}" if job.owner != tenant else "collections"
        command = ["POST", f"/{where}/{job.collection}/batches", f"job {job_id}"]
        try:
            run = run_batch(det, job.collection, _read_records(folder), folder / REPORT, command=command,
                            show_progress_bar=False, stop=self._stop.is_set)
            if run.stopped:
                return  # stays "running": resumed at the next start
            report = build_report(det, folder / REPORT)
        except Factor4Error as exc:
            msg = str(exc).replace(str(self.home), "<store>")
            self._update(tenant, job_id, status="failed", finished_utc=_now(), error=msg)
            return
        self._update(tenant, job_id, status="done", finished_utc=_now(), summary=report.summary,
                     digest=report.digest)

    # -- the jobs -------------------------------------------------------------------------------
    def submit(self, tenant: str, ref: CollectionRef, files: list[tuple[str, bytes]], manifest: bytes | None,
               max_outputs: int) -> Job:
        """Store a batch whole (files, records, job.json) and queue it; 429 `too_many_batches`
        when the tenant already has `max_pending` batches queued or running."""
        with self._lock:
            if self._pending[tenant] >= self.max_pending:
                raise ServiceError(429, "too_many_batches",
                                   f"{self._pending[tenant]} of your batches are queued or running, the most "
                                   f"max_pending_batches = {self.max_pending} allows (FACTOR4_MAX_PENDING_BATCHES); "
                                   "retry when one is done", {"Retry-After": "10"})
            self._pending[tenant] += 1
        try:
            return self._store(tenant, ref, files, manifest, max_outputs)
        except BaseException:
            with self._lock:
                self._pending[tenant] -= 1
            raise

    def _store(self, tenant: str, ref: CollectionRef, files: list[tuple[str, bytes]], manifest: bytes | None,
               max_outputs: int) -> Job:
        root = jobs_root(self.home, tenant)
        root.mkdir(parents=True, exist_ok=True)
        job_id = secrets.token_hex(8)
        tmp = root / f".{job_id}.new"
        tmp.mkdir()
        try:
            outputs = tmp / OUTPUTS
            outputs.mkdir()
            records = _records_from_upload(files, manifest, root / job_id / OUTPUTS, max_outputs)
            for i, (name, data) in enumerate(files):
                write_atomic(outputs / safe_name(name, i), data)
            body = "".join(json.dumps({"skipped": r.to_dict()} if isinstance(r, Skipped) else r.to_dict(),
                                      sort_keys=True) + "\n" for r in records)
            write_atomic(tmp / RECORDS, body.encode())
            job = Job(job_id, tenant, ref.owner, ref.name, ref.label, "queued", len(records), _now())
            write_atomic(tmp / JOB, json.dumps(job.to_dict(), indent=1).encode())
            os.replace(tmp, root / job_id)
            fd = os.open(root, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._queue.put((tenant, job_id))
        return job

    def _folder(self, tenant: str, job_id: str) -> Path:
        if not _ID.match(job_id):
            raise _not_found(job_id)
        folder = jobs_root(self.home, check_tenant(tenant)) / job_id
        if not (folder / JOB).is_file():
            raise _not_found(job_id)
        return folder

    def get(self, tenant: str, job_id: str) -> Job:
        return _load_job(self._folder(tenant, job_id))

    def progress(self, tenant: str, job_id: str) -> int:
        """Outputs done so far (scanned or skipped)."""
        results = self._folder(tenant, job_id) / REPORT / "results.jsonl"
        if not results.exists():
            return 0
        with results.open("rb") as fh:
            return sum(1 for line in fh if line.endswith(b"\n"))

    def list(self, tenant: str) -> list[Job]:
        root = jobs_root(self.home, tenant)
        if not root.is_dir():
            return []
        jobs = []
        for folder in root.iterdir():
            if _ID.match(folder.name) and (folder / JOB).is_file():
                jobs.append(_load_job(folder))
        return sorted(jobs, key=lambda j: (j.created_utc, j.id))

    def _update(self, tenant: str, job_id: str, **changes: Any) -> Job:
        with self._lock:
            folder = self._folder(tenant, job_id)
            job = replace(_load_job(folder), **changes)
            write_atomic(folder / JOB, json.dumps(job.to_dict(), indent=1).encode())
            return job

    def report_file(self, tenant: str, job_id: str, name: str) -> Path:
        """A file of a finished job's report (409 until it is done)."""
        job = self.get(tenant, job_id)
        if job.status != "done":
            raise ServiceError(409, "batch_not_done", f"batch {job_id} is {job.status}; its report is there when "
                               f"GET /batches/{job_id} says done")
        return self._folder(tenant, job_id) / REPORT / name

    def report_zip(self, tenant: str, job_id: str) -> bytes:
        """The report folder as a zip, for `factor4 verify` and `factor4 replay` elsewhere."""
        folder = self.report_file(tenant, job_id, "DIGEST").parent
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in REPORT_FILES:
                zf.write(folder / name, f"batch-{job_id}/{name}")
        return buf.getvalue()

    def delete(self, tenant: str, job_id: str) -> None:
        job = self.get(tenant, job_id)
        if job.status in ("queued", "running"):
            raise ServiceError(409, "batch_not_done", f"batch {job_id} is {job.status}; delete it once it is "
                               "done or failed")
        folder = self._folder(tenant, job_id)
        gone = folder.with_name(f".{job_id}.gone")
        os.replace(folder, gone)  # atomically out of sight, then removed
        shutil.rmtree(gone, ignore_errors=True)


def _not_found(job_id: str) -> ServiceError:
    return ServiceError(404, "batch_not_found", f"no batch {job_id!r}; list yours with GET /batches")


__all__ = ["Job", "JobStatus", "Jobs", "jobs_root"]
