"""Batch scans: submit many outputs as one job, follow it, fetch its evidence report.

`POST /collections/{name}/batches` (or `/public/{owner}/{name}/batches` for another tenant's
public collection) takes output files as multipart `file` fields and/or a JSONL `manifest`
field (the format of `factor4 scan --manifest`: one output per line, `"output": "<uploaded file
name>"` or `"text": ...`, with optional context: model, model_version, prompt, prompt_type, seed,
date). The job runs in the background; `GET /batches/{id}` says how far it is; when done, its
report is at `/batches/{id}/report.json`, `report.html`, and `report.zip` (the whole folder,
for `factor4 verify`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from detector.report_html import CSP
from service.access import CollectionRef, public
from service.deps import DetectorsDep, JobsDep, OwnCollectionDep, PrincipalDep, SettingsDep, TenancyDep
from service.jobs import Job, Jobs
from service.schemas import BatchOut, ErrorOut
from service.settings import Settings
from service.uploads import multipart_uploads, read_upload

router = APIRouter(tags=["batches"], responses={401: {"model": ErrorOut}, 422: {"model": ErrorOut},
                                                 429: {"model": ErrorOut}})

_SUBMIT_DOC = {
    "status_code": 202,
    "response_model": BatchOut,
    "responses": {400: {"model": ErrorOut}, 404: {"model": ErrorOut}, 413: {"model": ErrorOut},
                  415: {"model": ErrorOut}},
    "openapi_extra": {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                     "description": "output files (images or texts)"},
            "manifest": {"type": "string", "format": "binary",
                         "description": "JSONL, one output per line: {\"output\": \"<uploaded file name>\"} or "
                                        "{\"text\": \"...\"}, plus optional id, model, model_version, prompt, "
                                        "prompt_type (realistic|adversarial), seed, date"},
        },
    }}}}},
}


def _out(job: Job, done: int) -> BatchOut:
    base = f"/batches/{job.id}"
    links = {"self": base}
    if job.status == "done":
        links |= {"report_json": f"{base}/report.json", "report_html": f"{base}/report.html",
                  "report_zip": f"{base}/report.zip"}
    return BatchOut(id=job.id, collection=job.label, status=job.status, outputs=job.outputs, done=done,
                    created_utc=job.created_utc, started_utc=job.started_utc, finished_utc=job.finished_utc,
                    error=job.error, summary=job.summary, digest=job.digest, links=links)


async def _submit(request: Request, coll: CollectionRef, tenant: str, settings: Settings, jobs: Jobs) -> BatchOut:
    limit = settings.max_batch_outputs
    form, uploads = await multipart_uploads(request, limit, "max_batch_outputs", "batch_too_large", "batch",
                                            "split the batch", "'file' fields and/or a 'manifest' field",
                                            other_files=1)
    raw = form.get("manifest")
    manifest: bytes | None
    if isinstance(raw, UploadFile):
        manifest = await read_upload(raw, settings)
    elif isinstance(raw, str):
        manifest = raw.encode("utf-8")
    else:
        manifest = None
    files = [(u.filename or f"upload-{i}", await read_upload(u, settings)) for i, u in enumerate(uploads)]
    job = await run_in_threadpool(jobs.submit, tenant, coll, files, manifest, limit)
    return _out(job, 0)


@router.post("/collections/{name}/batches", **_SUBMIT_DOC)
async def submit(request: Request, coll: OwnCollectionDep, principal: PrincipalDep, settings: SettingsDep,
                 jobs: JobsDep) -> BatchOut:
    """Scan many outputs against your collection *name* as a background job (202): the
    answer's `links.self` says how far it is, and gives the report when it is done."""
    return await _submit(request, coll, principal.tenant, settings, jobs)


@router.post("/public/{owner}/{name}/batches", **_SUBMIT_DOC)
async def submit_public(owner: str, name: str, request: Request, principal: PrincipalDep,
                        detectors: DetectorsDep, tenancy: TenancyDep, settings: SettingsDep,
                        jobs: JobsDep) -> BatchOut:
    """The same against *owner*'s public collection *name* (404 unless it is public)."""
    coll = await run_in_threadpool(public, detectors, tenancy, principal.tenant, owner, name)
    return await _submit(request, coll, principal.tenant, settings, jobs)


@router.get("/batches", response_model=list[BatchOut])
def list_batches(principal: PrincipalDep, jobs: JobsDep) -> list[BatchOut]:
    """Your batches, oldest first."""
    return [_out(j, jobs.progress(principal.tenant, j.id)) for j in jobs.list(principal.tenant)]


@router.get("/batches/{batch_id}", response_model=BatchOut, responses={404: {"model": ErrorOut}})
def get_batch(batch_id: str, principal: PrincipalDep, jobs: JobsDep) -> BatchOut:
    """Status: queued, running (`done` of `outputs` scanned), done (with the report's summary
    and digest) or failed (with the error)."""
    return _out(jobs.get(principal.tenant, batch_id), jobs.progress(principal.tenant, batch_id))


@router.get("/batches/{batch_id}/report.json",
            responses={200: {"content": {"application/json": {}}, "description": "report.json"},
                       404: {"model": ErrorOut}, 409: {"model": ErrorOut}})
def report_json(batch_id: str, principal: PrincipalDep, jobs: JobsDep) -> Response:
    """The report, machine-readable (schema: `detector/report.py`)."""
    path = jobs.report_file(principal.tenant, batch_id, "report.json")
    return Response(path.read_bytes(), media_type="application/json")


@router.get("/batches/{batch_id}/report.html",
            responses={200: {"content": {"text/html": {}}, "description": "report.html"},
                       404: {"model": ErrorOut}, 409: {"model": ErrorOut}})
def report_html(batch_id: str, principal: PrincipalDep, jobs: JobsDep) -> Response:
    """The report as one self-contained page for people."""
    path = jobs.report_file(principal.tenant, batch_id, "report.html")
    return Response(path.read_bytes(), media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": CSP})


@router.get("/batches/{batch_id}/report.zip",
            responses={200: {"content": {"application/zip": {}}, "description": "the report folder"},
                       404: {"model": ErrorOut}, 409: {"model": ErrorOut}})
def report_zip(batch_id: str, principal: PrincipalDep, jobs: JobsDep) -> Response:
    """The whole report folder (results, report.json, report.html, DIGEST): unzip it and run
    `factor4 verify` on it."""
    data = jobs.report_zip(principal.tenant, batch_id)
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="batch-{batch_id}.zip"'})


@router.delete("/batches/{batch_id}", status_code=204, responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}})
def delete_batch(batch_id: str, principal: PrincipalDep, jobs: JobsDep) -> Response:
    """Delete a finished or failed batch with its uploaded outputs and report."""
    jobs.delete(principal.tenant, batch_id)
    return Response(status_code=204)
