"""Dependencies shared by the routers, as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from detector import config, safejson
from service.access import CollectionRef, Detectors, own
from service.encoders import EncoderCatalog
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


def get_encoders(request: Request) -> EncoderCatalog:
    return request.app.state.encoders


SettingsDep = Annotated[Settings, Depends(get_settings)]
HomeDep = Annotated[Path, Depends(get_home)]
TenancyDep = Annotated[Tenancy, Depends(get_tenancy)]
DetectorsDep = Annotated[Detectors, Depends(get_detectors)]
JobsDep = Annotated[Jobs, Depends(get_jobs)]
EncodersDep = Annotated[EncoderCatalog, Depends(get_encoders)]


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


def json_limits(settings: Settings) -> safejson.JsonLimits:
    """The bounds on JSON clients send: the library's, with room for a text of max_text_chars
    and a body of max_request_bytes."""
    return safejson.JsonLimits(max_string=max(config.JSON_MAX_STRING, settings.max_text_chars),
                               max_bytes=settings.max_request_bytes)


def read_json(data: str | bytes, where: str, settings: Settings) -> Any:
    """JSON a client sent (a body, a form field), parsed within `json_limits`: 422 `json_limit`
    naming the field and the limit it passes, or `invalid_json` naming where it is malformed."""
    try:
        return safejson.loads(data, where, json_limits(settings))
    except safejson.JsonLimitError as exc:
        raise ServiceError(422, "json_limit" if exc.limit else "invalid_json", str(exc)) from exc


M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], data: bytes, settings: Settings) -> M:
    """A JSON body as *model*: `read_json`, then the model's own (strict) validation."""
    try:
        return model.model_validate(read_json(data, "body", settings))
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from exc


def json_body(model: type[BaseModel]) -> Callable[..., Awaitable[BaseModel]]:
    """A dependency giving the JSON body as *model*, read only once the key is accepted: FastAPI
    reads and parses a body declared as a parameter before any dependency runs, so a request
    without a key could make the service parse up to max_request_bytes of JSON. Document the
    body with `openapi_extra=json_body_doc(model)`."""

    async def parse(request: Request, _: PrincipalDep) -> BaseModel:
        return parse_body(model, await request.body(), request.app.state.settings)

    return parse


def json_body_doc(model: type[BaseModel]) -> dict:
    """OpenAPI for a `json_body(model)` request body."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}
