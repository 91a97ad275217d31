"""The works of one of your collections: upload (one or many files), list, show, remove."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from detector import config
from detector.errors import CollectionError
from detector.results import WorkRef
from indexes import WorkRecord
from service.access import CollectionRef
from service.deps import HomeDep, OwnCollectionDep, SettingsDep, read_json
from service.errors import ServiceError
from service.schemas import AddReportOut, ErrorOut, WorkOut
from service.settings import Settings
from service.uploads import META_FIELDS, check_pixels, multipart_uploads, read_upload, scrub, staging, work_meta

#: Works per page of GET .../works by default, and at most.
WORKS_PAGE, WORKS_PAGE_MAX = 100, 1000

router = APIRouter(prefix="/collections/{name}/works", tags=["works"],
                   responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut},
                              429: {"model": ErrorOut}})

_UPLOAD_SCHEMA = {
    "type": "object",
    "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "one or more work files (images or texts)"},
        **{f: {"type": "string", "description": f"{f} of the work (one file only)"} for f in META_FIELDS},
        "meta": {"type": "string", "description": 'JSON: {"file name": {"title": ..., "creator": ..., '
                                                  '"licence": ..., "source_url": ...}, ...}'},
    },
    "required": ["file"],
}


def _work_out(ref: WorkRef, home: Path) -> dict:
    return scrub(ref.to_dict(), home)


def _parse_meta(form: FormData, uploads: list[UploadFile], settings: Settings) -> dict[str, dict]:
    """Metadata per upload file name: fields for a single file, or the JSON `meta` mapping."""
    by_name: dict[str, dict] = {}
    raw = form.get("meta")
    if isinstance(raw, str) and raw.strip():
        parsed = read_json(raw, "field 'meta'", settings)
        if not isinstance(parsed, dict):
            raise ServiceError(422, "bad_metadata", "field 'meta' must map file names to objects of "
                               + ", ".join(META_FIELDS))
        names = {u.filename for u in uploads}
        unknown = sorted(set(parsed) - names)
        if unknown:
            raise ServiceError(422, "bad_metadata", f"field 'meta' names files not uploaded: {', '.join(unknown)}")
        by_name.update(parsed)
    single = {f: form[f] for f in META_FIELDS if isinstance(form.get(f), str) and form[f].strip()}
    if single:
        if len(uploads) != 1:
            raise ServiceError(422, "bad_metadata", "fields " + ", ".join(META_FIELDS)
                               + " describe one file; for many, send a JSON 'meta' field mapping file names "
                               "to fields")
        by_name[uploads[0].filename] = {**by_name.get(uploads[0].filename, {}), **single}
    return by_name


@router.post("", status_code=201, response_model=AddReportOut,
             responses={400: {"model": ErrorOut}, 413: {"model": ErrorOut}, 415: {"model": ErrorOut}},
             openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": _UPLOAD_SCHEMA}},
                                            "required": True}})
async def add_works(request: Request, coll: OwnCollectionDep, settings: SettingsDep, home: HomeDep) -> dict:
    """Add works from multipart field(s) `file`, with optional metadata. A file already stored
    (same sha256) is listed in `duplicates`; an unreadable one in `failed`. An image over the
    pixel limit refuses the whole request and nothing is stored."""
    form, uploads = await multipart_uploads(request, settings.max_files_per_upload, "max_files_per_upload",
                                            "too_many_files", "request", "send them in several requests",
                                            "one or more 'file' fields")
    if not uploads:
        raise ServiceError(422, "invalid_request", "send the works as multipart field(s) named 'file'")
    meta = _parse_meta(form, uploads, settings)
    files = [(u.filename, await read_upload(u, settings)) for u in uploads]
    for filename, data in files:
        await run_in_threadpool(check_pixels, data, filename or "upload", settings)
    with staging(home) as stage:
        for filename, data in files:
            fields = meta.get(filename)
            stage.add(data, filename, None if fields is None else work_meta(fields, f"meta[{filename!r}]"))
        report = await run_in_threadpool(coll.det.add, coll.name, stage.paths, meta=stage.table(),
                                         show_progress_bar=False)
    out = scrub(report.to_dict(), home)
    if report.failed and not report.added and not report.duplicates:
        raise ServiceError(422, "bad_input", "; ".join(f["error"] for f in out["failed"]))
    return out


@router.get("", response_model=list[WorkOut])
async def list_works(coll: OwnCollectionDep, home: HomeDep, response: Response,
                     limit: Annotated[int, Query(ge=1, le=WORKS_PAGE_MAX)] = WORKS_PAGE,
                     offset: Annotated[int, Query(ge=0, le=config.MAX_OFFSET)] = 0) -> list[dict]:
    """The works, oldest first, a page at a time: *limit* from *offset*. The `X-Total-Count`
    header gives how many there are; a `Link: <...>; rel="next"` header the next page."""
    works = await run_in_threadpool(coll.det.works, coll.name, limit, offset)
    total = (await run_in_threadpool(coll.det.manifest, coll.name)).counts.get("works", 0)
    response.headers["X-Total-Count"] = str(total)
    if offset + len(works) < total:
        response.headers["Link"] = (f'</collections/{coll.name}/works?limit={limit}&offset={offset + limit}>; '
                                    'rel="next"')
    return [_work_out(WorkRef.from_record(w), home) for w in works]


def _find(coll: CollectionRef, work_id: str) -> WorkRecord:
    try:
        return coll.det.work(coll.name, work_id)
    except CollectionError as exc:
        if "has no work" not in str(exc):
            raise
    raise ServiceError(404, "work_not_found", f"collection {coll.label!r} has no work {work_id!r}; "
                       f"list them with GET /collections/{coll.label}/works")


@router.get("/{work_id}", response_model=WorkOut)
async def get_work(work_id: str, coll: OwnCollectionDep, home: HomeDep) -> dict:
    rec = await run_in_threadpool(_find, coll, work_id)
    return _work_out(WorkRef.from_record(rec), home)


@router.delete("/{work_id}", status_code=204)
async def remove_work(work_id: str, coll: OwnCollectionDep) -> Response:
    """Remove a work (by id or sha256) with all its vectors."""
    try:
        await run_in_threadpool(coll.det.remove, coll.name, work_id)
    except CollectionError as exc:
        if "has no work" in str(exc):
            raise ServiceError(404, "work_not_found", f"collection {coll.label!r} has no work {work_id!r}") from exc
        raise
    return Response(status_code=204)
