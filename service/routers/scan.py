"""Scan one output against a collection: an uploaded file (multipart) or JSON text."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from detector.works import read_item, text_item
from service.deps import DetectorDep, SettingsDep
from service.schemas import ErrorOut, ScanOut, TextScanRequest

router = APIRouter(prefix="/collections/{name}", tags=["scan"])


@router.post(
    "/scan",
    response_model=ScanOut,
    responses={404: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": ErrorOut}},
    openapi_extra={
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
)
async def scan(name: str, request: Request, det: DetectorDep, settings: SettingsDep) -> dict:
    """Score one AI output against collection *name*; the body is the same JSON as
    `factor4 scan --json` gives for one input."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "send the output as a multipart field named 'file'")
        data = await upload.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"upload exceeds the limit of {settings.max_upload_bytes} bytes")
        item = await run_in_threadpool(read_item, data=data, name=upload.filename or "upload")
    elif ctype.startswith("application/json"):
        try:
            body = TextScanRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from exc
        if len(body.text) > settings.max_text_chars:
            raise HTTPException(413, f"text exceeds the limit of {settings.max_text_chars} characters")
        item = text_item(body.text, body.name)
    else:
        raise HTTPException(415, "send multipart/form-data with a 'file' field, or application/json with 'text'")
    result = await run_in_threadpool(det.scan_item, name, item)
    return result.to_dict()
