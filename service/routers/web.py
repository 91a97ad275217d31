"""The web page (GET /) and the work thumbnails it shows beside an image output.

The page is one self-contained file, `service/static/index.html`: it holds no data and needs no
key to load; it asks for the key, keeps it in the tab's sessionStorage and calls the JSON API
with it. Its Content-Security-Policy allows only the page's own inline script and style (by
hash) and requests to this origin, so nothing it shows can load or run anything else.

Thumbnails: the JPEG stored with an image work (at most `detector.config.THUMBNAIL_SIDE`
pixels a side); `work_region` of a scan match is in the work's full pixels (`work_size`), so a
box on the thumbnail is drawn in proportion. Your own collection's at
/collections/{name}/works/{id}/thumbnail; a public collection's at
/public/{owner}/{name}/works/{id}/thumbnail, for anyone who may scan it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from detector.errors import CollectionError
from service.access import CollectionRef, public
from service.deps import DetectorsDep, OwnCollectionDep, PrincipalDep, TenancyDep
from service.errors import ServiceError
from service.schemas import ErrorOut

router = APIRouter(tags=["web"])

_PAGE = "static/index.html"
_THUMBNAIL_DOC = {
    "response_class": Response,
    "responses": {200: {"content": {"image/jpeg": {}}, "description": "the work's thumbnail (JPEG)"},
                  401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut},
                  429: {"model": ErrorOut}},
}


def _hashes(page: str, tag: str) -> str:
    """CSP source expressions for each inline <tag> element of *page* (its exact text)."""
    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
                    for b in bodies) or "'none'"


@cache
def page() -> tuple[bytes, dict[str, str]]:
    """The page's bytes and the headers it is served with."""
    html = resources.files("service").joinpath(_PAGE).read_text(encoding="utf-8")
    csp = "; ".join([
        "default-src 'self'",
        f"script-src {_hashes(html, 'script')}",
        f"style-src {_hashes(html, 'style')}",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])
    headers = {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
               "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}
    return html.encode(), headers


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index() -> HTMLResponse:
    """The web page: sign in with a key, choose a collection, scan an image or a text."""
    body, headers = page()
    return HTMLResponse(body, headers=headers)


def _thumbnail(coll: CollectionRef, work_id: str) -> Response:
    try:
        data = coll.det.thumbnail(coll.name, work_id)
    except CollectionError as exc:
        if "has no work" not in str(exc):
            raise
        raise ServiceError(404, "work_not_found", f"collection {coll.label!r} has no work {work_id!r}") from exc
    if data is None:
        raise ServiceError(404, "no_thumbnail", f"work {work_id!r} of collection {coll.label!r} is a text: "
                           "only image works have thumbnails")
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})


@router.get("/collections/{name}/works/{work_id}/thumbnail", **_THUMBNAIL_DOC)
async def thumbnail(work_id: str, coll: OwnCollectionDep) -> Response:
    """The stored JPEG thumbnail of image work *work_id* (id or sha256) of your collection *name*."""
    return await run_in_threadpool(_thumbnail, coll, work_id)


@router.get("/public/{owner}/{name}/works/{work_id}/thumbnail", **_THUMBNAIL_DOC)
async def thumbnail_public(owner: str, name: str, work_id: str, principal: PrincipalDep, detectors: DetectorsDep,
                           tenancy: TenancyDep) -> Response:
    """The thumbnail of image work *work_id* of *owner*'s public collection *name* (404 unless it
    is public): what a scan of that collection matched."""
    coll = await run_in_threadpool(public, detectors, tenancy, principal.tenant, owner, name)
    return await run_in_threadpool(_thumbnail, coll, work_id)
