"""Schemathesis against the service's own OpenAPI spec, in process: no generated request may get
a 5xx, and every answer must be one the spec documents (status code, content type, body schema).

Every operation of the spec (so a new route is fuzzed without a change here) gets schemathesis's
coverage cases (boundary values, missing and wrong-typed fields, unexpected methods) and a few
Hypothesis examples, valid and invalid, twice: with the API key of a tenant owning a small
collection (2 of scikit-image's photographs and a standard-library docstring), and without a key
(401 everywhere but /health). With the key, each request is sent as generated (random names and
ids: the 404 and validation paths) and again aimed at the tenant's real collection, work and
batch, so uploads, scans and batches reach the library. DELETEs are aimed at a scratch collection
that is rebuilt when it is gone, and works a fuzzed upload added are removed, so the fixture
collection is the same for every case. Bounded: fixed seed, derandomized, few examples.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from detector import Detector
from service.main import create_app
from service.settings import Settings
from service.tenancy import Tenancy, tenant_home
from tests.conftest import module_doc, skimage_data

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: Hypothesis examples per operation and run (on top of schemathesis's coverage cases).
MAX_EXAMPLES = 25
SEED = 20240601
#: Operations that need no key.
OPEN = {("GET", "/health")}
OPERATIONS = sorted((method.upper(), path) for path, ops in create_app(Settings(home="unused")).openapi()["paths"].items()
                    for method in ops)


@dataclass
class Fuzz:
    """The app, the tenant's key, and the tenant's collections: 'fx' (the fixture, default
    encoders) and 'scratch' (one text, shingles only: what DELETEs aim at)."""

    app: FastAPI
    key: str
    fixture_ids: set[str]
    image_id: str  # a work with a thumbnail
    tmp: Path

    @property
    def det(self) -> Detector:
        return self.app.state.detectors.get("alice")

    def aim(self, method: str, params: dict | None) -> dict:
        """Path parameters naming the tenant's real collection, work and batch."""
        out = dict(params or {})
        destructive = method == "DELETE"
        for key in out:
            if key == "name":
                out[key] = "scratch" if destructive else "fx"
            elif key == "work_id":
                out[key] = self._scratch_id() if destructive else self.image_id
            elif key == "owner":
                out[key] = "alice"
            elif key == "batch_id":
                jobs = self.app.state.jobs.list("alice")
                if jobs:
                    out[key] = jobs[-1].id
        return out

    def _scratch_id(self) -> str:
        works = self.det.works("scratch") if self.det.store.exists("scratch") else []
        return works[0].id if works else "0" * 16

    def restore(self) -> None:
        """Rebuild 'scratch' when a DELETE took it or its work; drop works a fuzzed upload added to 'fx'."""
        det = self.det
        if not det.store.exists("scratch"):
            det.create("scratch", ["shingles"])
        if not det.works("scratch"):
            staged = self.tmp / "heapq.txt"
            staged.write_text(module_doc("heapq"), encoding="utf-8")
            det.add("scratch", [staged], show_progress_bar=False)
        for w in det.works("fx"):
            if w.id not in self.fixture_ids:
                det.remove("fx", w.id)


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    home = tmp_path_factory.mktemp("fuzz")
    files = tmp_path_factory.mktemp("fuzz-works")
    data = skimage_data()
    for name in ("coffee.png", "rocket.jpg"):
        (files / name).write_bytes((data / name).read_bytes())
    (files / "csv.txt").write_text(module_doc("csv"), encoding="utf-8")
    det = Detector(tenant_home(home, "alice"))
    det.create("fx")
    report = det.add("fx", sorted(files.iterdir()), show_progress_bar=False)
    assert sorted(w.modality for w in report.added) == ["image", "image", "text"], report.failed
    det.close()
    key = Tenancy(home).create_key("alice").key
    app = create_app(Settings(home=str(home), rate_per_second=1e6, rate_burst=10**6))
    image = next(w.id for w in report.added if w.modality == "image")
    yield Fuzz(app, key, {w.id for w in report.added}, image, files)
    asgi.shutdown_lifespans()  # the app's lifespan, which schemathesis started


@pytest.fixture(scope="module")
def api(fuzz: Fuzz):
    config = schemathesis.Config.from_dict({"seed": SEED, "generation": {"deterministic": True}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz.app, config=config)  # starts the lifespan
    fuzz.restore()
    return schema


class Findings:
    """Distinct failures of one operation's run (by check, status and method), one example each,
    so a run reports every kind of problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.found: dict[tuple, str] = {}

    def send(self, case, headers: dict[str, str] | None = None) -> int:
        response = case.call(headers=headers)
        problems: list[str] = []
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            problems = [f.title for f in group.exceptions]
        except Failure as failure:
            problems = [failure.title]
        for title in problems:
            self.found.setdefault((title, response.status_code, case.method),
                                  f"{title}: {case.method} {case.formatted_path} -> {response.status_code} "
                                  f"{response.content[:300]!r}\n  {case.as_curl_command(headers)[:600]}")
        return response.status_code

    def add(self, key: tuple, message: str) -> None:
        self.found.setdefault(key, message)

    def check(self) -> None:
        assert not self.found, "\n".join(self.found.values())


def _fuzz(api, method: str, path: str, send: Callable) -> None:
    """Send *method* *path*'s coverage cases, then Hypothesis examples (valid and invalid)."""
    op = api[path][method]
    for case in api.iter_coverage_cases(op, generation_modes=list(GenerationMode),
                                        generation_config=api.config.generation_for(operation=op)):
        send(case)
    strategy = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def examples(case) -> None:
        send(case)

    examples()


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_with_a_key_no_5xx_and_answers_as_documented(api, fuzz: Fuzz, method: str, path: str) -> None:
    headers = {"Authorization": f"Bearer {fuzz.key}"}
    findings = Findings()

    def send(case) -> None:
        findings.send(case, headers)
        if case.path_parameters:
            case.path_parameters = fuzz.aim(case.method, case.path_parameters)
            findings.send(case, headers)
        fuzz.restore()

    _fuzz(api, method, path, send)
    findings.check()


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_without_a_key_401_and_no_5xx(api, fuzz: Fuzz, method: str, path: str) -> None:
    findings = Findings()

    def send(case) -> None:
        for params in (case.path_parameters, fuzz.aim(case.method, case.path_parameters)):
            case.path_parameters = params
            status = findings.send(case)
            # 413 (a body over the limit) and 405 (a probe's unexpected method) come before the key check
            if case.method == method and (method, path) not in OPEN and status not in (401, 405, 413):
                findings.add(("not 401", status), f"not 401: {case.method} {case.formatted_path} -> {status}")

    _fuzz(api, method, path, send)
    findings.check()


def test_spec_documents_every_error_as_error_out() -> None:
    """Every 4xx the spec names has the body all errors have (`ErrorOut`: FastAPI would document
    its own 422 shape), and every operation that needs a key documents 401 and 429."""
    spec = create_app(Settings(home="unused")).openapi()
    wrong = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if status.startswith("4") and schema != {"$ref": "#/components/schemas/ErrorOut"}:
                    wrong.append(f"{method.upper()} {path}: {status} is documented as {schema}")
            if (method.upper(), path) not in OPEN and not {"401", "429"} <= set(op["responses"]):
                wrong.append(f"{method.upper()} {path}: 401 or 429 not documented")
    assert not wrong, "\n".join(wrong)


def test_fuzzed_batches_did_not_fail_internally(fuzz: Fuzz) -> None:
    """A batch job's crash is a 5xx in disguise: the job's answer says "internal error"."""
    jobs = fuzz.app.state.jobs if hasattr(fuzz.app.state, "jobs") else None
    if jobs is None:
        pytest.skip("the fuzz runs above did not start the app")
    deadline = time.monotonic() + 60
    while any(j.status in ("queued", "running") for j in jobs.list("alice")) and time.monotonic() < deadline:
        time.sleep(0.2)
    bad = [(j.id, j.status, j.error) for j in jobs.list("alice") if j.status != "done"]
    assert not bad, bad
