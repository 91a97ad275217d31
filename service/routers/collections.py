"""A tenant's collections: create, list (its own and the public ones), show, publish, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.concurrency import run_in_threadpool

from detector import config
from indexes import Manifest
from service.access import CollectionRef
from service.deps import DetectorsDep, EncodersDep, OwnCollectionDep, PrincipalDep, TenancyDep, json_body, json_body_doc
from service.encoders import EncoderCatalog
from service.schemas import CollectionCreate, CollectionOut, CollectionPatch, ErrorOut

router = APIRouter(prefix="/collections", tags=["collections"],
                   responses={401: {"model": ErrorOut}, 422: {"model": ErrorOut}, 429: {"model": ErrorOut}})


def _out(manifest: Manifest, owner: str, tenant: str, public: bool, catalog: EncoderCatalog) -> CollectionOut:
    mine = owner == tenant
    name = manifest.name if mine else f"{owner}/{manifest.name}"
    return CollectionOut(
        name=name, owner=owner, own=mine, public=public,
        scan_url=f"/collections/{manifest.name}/scan" if mine else f"/public/{owner}/{manifest.name}/scan",
        encoders=[catalog.name_of(c.encoder) for c in manifest.channels], works=manifest.counts.get("works", 0),
        created_at=manifest.created_at, generation=manifest.generation,
    )


def _describe(ref: CollectionRef, tenant: str, tenancy: TenancyDep, catalog: EncoderCatalog) -> CollectionOut:
    return _out(ref.det.manifest(ref.name), ref.owner, tenant, tenancy.is_public(ref.owner, ref.name), catalog)


@router.post("", status_code=201, response_model=CollectionOut, responses={409: {"model": ErrorOut}},
             openapi_extra=json_body_doc(CollectionCreate))
async def create(body: Annotated[CollectionCreate, Depends(json_body(CollectionCreate))], principal: PrincipalDep,
                 detectors: DetectorsDep, tenancy: TenancyDep, catalog: EncodersDep) -> CollectionOut:
    """Create an empty collection (409 `collection_exists` if you have one of that name) with
    encoders named from those this service offers (GET /encoders; 422 `unknown_encoder` else)."""
    det = detectors.get(principal.tenant)
    specs = catalog.resolve(body.encoders or list(config.DEFAULT_ENCODERS))
    manifest = await run_in_threadpool(det.create, body.name, specs)  # loads an offered model once per process
    await run_in_threadpool(tenancy.set_public, principal.tenant, body.name, body.public)
    return _out(manifest, principal.tenant, principal.tenant, body.public, catalog)


@router.get("", response_model=list[CollectionOut])
def list_collections(principal: PrincipalDep, detectors: DetectorsDep, tenancy: TenancyDep,
                     catalog: EncodersDep) -> list[CollectionOut]:
    """Your collections, then the other tenants' public ones (named OWNER/NAME)."""
    tenant = principal.tenant
    det = detectors.get(tenant)
    public = tenancy.public_collections()
    mine = {c for o, c in public if o == tenant}
    out = [_out(det.manifest(n), tenant, tenant, n in mine, catalog) for n in det.collections()]
    for owner, name in public:
        if owner != tenant:
            other = detectors.get(owner)
            if other.store.exists(name):
                out.append(_out(other.manifest(name), owner, tenant, True, catalog))
    return out


@router.get("/{name}", response_model=CollectionOut, responses={404: {"model": ErrorOut}})
def get_collection(coll: OwnCollectionDep, principal: PrincipalDep, tenancy: TenancyDep,
                   catalog: EncodersDep) -> CollectionOut:
    return _describe(coll, principal.tenant, tenancy, catalog)


@router.patch("/{name}", response_model=CollectionOut, responses={404: {"model": ErrorOut}},
              openapi_extra=json_body_doc(CollectionPatch))
def patch_collection(coll: OwnCollectionDep, body: Annotated[CollectionPatch, Depends(json_body(CollectionPatch))],
                     principal: PrincipalDep, tenancy: TenancyDep, catalog: EncodersDep) -> CollectionOut:
    """Mark your collection public-readable (any tenant may scan it) or private again
    (`public` is JSON true or false; "yes" or 1 is a 422)."""
    tenancy.set_public(coll.owner, coll.name, body.public)
    return _describe(coll, principal.tenant, tenancy, catalog)


@router.delete("/{name}", status_code=204, responses={404: {"model": ErrorOut}})
async def delete_collection(coll: OwnCollectionDep, tenancy: TenancyDep) -> Response:
    """Delete your collection and all its works (only the owner can: others get 404)."""
    await run_in_threadpool(tenancy.set_public, coll.owner, coll.name, False)
    await run_in_threadpool(coll.det.delete, coll.name)
    return Response(status_code=204)
