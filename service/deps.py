"""Dependencies shared by the routers, as `Annotated` aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from service.access import CollectionRef, Detectors, own
from service.errors import ServiceError, unauthorized
from service.jobs import Jobs
from service.limits import RateLimiter
from service.settings import Settings
from service.tenancy import Principal, Tenancy


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_home(request: Request) -> Path:
    """The service's home folder (service.db, tenants/, uploads/)."""
    return request.app.state.home


def get_tenancy(request: Request) -> Tenancy:
    return request.app.state.tenancy


def get_detectors(request: Request) -> Detectors:
    return request.app.state.detectors


def get_jobs(request: Request) -> Jobs:
    return request.app.state.jobs


SettingsDep = Annotated[Settings, Depends(get_settings)]
HomeDep = Annotated[Path, Depends(get_home)]
TenancyDep = Annotated[Tenancy, Depends(get_tenancy)]
DetectorsDep = Annotated[Detectors, Depends(get_detectors)]
JobsDep = Annotated[Jobs, Depends(get_jobs)]


def api_key(request: Request) -> str | None:
    """The key from `Authorization: Bearer <key>`, else from `X-API-Key`."""
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


def get_principal(request: Request, tenancy: TenancyDep) -> Principal:
    """The tenant of a valid, unrevoked API key (else 401), within its request rate (else 429)."""
    principal = tenancy.authenticate(api_key(request))
    if principal is None:
        raise unauthorized()
    limiter: RateLimiter = request.app.state.rate_limiter
    wait = limiter.take(principal.key_id)
    if wait > 0:
        raise ServiceError(429, "rate_limited",
                           f"more than rate_per_second = {limiter.rate} requests per second (burst rate_burst = "
                           f"{limiter.burst}) with this key; retry after {wait:.2f} s",
                           {"Retry-After": RateLimiter.retry_after(wait)})
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_own_collection(name: str, principal: PrincipalDep, detectors: DetectorsDep) -> CollectionRef:
    """Path parameter *name* as one of the requester's own collections (404 otherwise)."""
    return own(detectors, principal.tenant, name)


OwnCollectionDep = Annotated[CollectionRef, Depends(get_own_collection)]
