"""Scan one output against a collection: an uploaded file (multipart) or JSON text. Your own
collection at /collections/{name}/scan; another tenant's public one at
/public/{owner}/{name}/scan."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from detector.works import text_item
from service.access import CollectionRef, public
from service.deps import DetectorsDep, HomeDep, OwnCollectionDep, PrincipalDep, SettingsDep, TenancyDep, parse_body
from service.errors import ServiceError
from service.schemas import ErrorOut, ScanOut, TextScanRequest
from service.settings import Settings
from service.uploads import item_from_upload, read_upload, scrub

router = APIRouter(tags=["scan"])

_SCAN_DOC = {
    "response_model": ScanOut,
    "responses": {400: {"model": ErrorOut}, 401: {"model": ErrorOut}, 404: {"model": ErrorOut},
                  413: {"model": ErrorOut}, 415: {"model": ErrorOut}, 422: {"model": ErrorOut},
                  429: {"model": ErrorOut}},
    "openapi_extra": {
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}},
                               "required": ["file"]}
                },
                "application/json": {"schema": TextScanRequest.model_json_schema()},
            },
            "required": True,
        }
    },
}


async def _scan(request: Request, coll: CollectionRef, settings: Settings, home: Path) -> dict:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1)
        except StarletteHTTPException as exc:  # a malformed body, or more than one file
            raise ServiceError(400, "bad_multipart", str(exc.detail)) from exc
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ServiceError(422, "invalid_request", "send the output as a multipart field named 'file'")
        data = await read_upload(upload, settings)
        item = await run_in_threadpool(item_from_upload, data, upload.filename or "upload", settings)
    elif ctype.startswith("application/json"):
        body = parse_body(TextScanRequest, await request.body(), settings)
        if len(body.text) > settings.max_text_chars:
            raise ServiceError(422, "text_too_long", f"text of {len(body.text)} characters exceeds max_text_chars = "
                               f"{settings.max_text_chars} (FACTOR4_MAX_TEXT_CHARS); split it")
        item = text_item(body.text, body.name)
    else:
        raise ServiceError(415, "unsupported_media_type",
                           "send multipart/form-data with a 'file' field, or application/json with 'text'")
    result = (await run_in_threadpool(coll.det.scan_item, coll.name, item)).to_dict()
    result["collection"] = coll.label
    return scrub(result, home)


@router.post("/collections/{name}/scan", **_SCAN_DOC)
async def scan(request: Request, coll: OwnCollectionDep, settings: SettingsDep, home: HomeDep) -> dict:
    """Score one AI output against your collection *name*; the body is the same JSON as
    `factor4 scan --json` gives for one input."""
    return await _scan(request, coll, settings, home)


@router.post("/public/{owner}/{name}/scan", **_SCAN_DOC)
async def scan_public(owner: str, name: str, request: Request, principal: PrincipalDep, detectors: DetectorsDep,
                      tenancy: TenancyDep, settings: SettingsDep, home: HomeDep) -> dict:
    """Score one AI output against *owner*'s public collection *name* (404 unless it is public)."""
    coll = await run_in_threadpool(public, detectors, tenancy, principal.tenant, owner, name)
    return await _scan(request, coll, settings, home)
