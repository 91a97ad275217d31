"""The encoders this service offers: what a tenant may name in a new collection's `encoders`."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import EncodersDep, PrincipalDep
from service.schemas import EncoderOut, ErrorOut

router = APIRouter(tags=["collections"], responses={401: {"model": ErrorOut}, 429: {"model": ErrorOut}})


@router.get("/encoders", response_model=list[EncoderOut])
def list_encoders(_: PrincipalDep, catalog: EncodersDep) -> list[EncoderOut]:
    """The built-in encoders and fingerprints, then those the operator registered (by name;
    a registered model's checkpoint is not shown)."""
    return [EncoderOut(name=o.name, modality=o.modality, kind=o.kind, description=o.description)
            for o in catalog.offered()]
