"""The HTTP service's scan endpoint: by upload or JSON text, errors as JSON 4xx.

Tenants, keys, isolation and limits: tests/test_service_tenants.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from detector import Detector
from service.main import create_app
from service.tenancy import Tenancy, tenant_home
from tests.conftest import edited_copy, module_doc


@pytest.fixture(scope="module")
def client(home: Path, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """A service whose tenant 'tester' holds a copy of the session's collection 'ref'."""
    service_home = tmp_path_factory.mktemp("service")
    shutil.copytree(home / "collections", tenant_home(service_home, "tester") / "collections")
    key = Tenancy(service_home).create_key("tester").key
    with TestClient(create_app(home=str(service_home)), headers={"Authorization": f"Bearer {key}"}) as c:
        yield c


def test_health(client: TestClient) -> None:
    r = client.get("/health", headers={"Authorization": ""})
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_scan_upload_matches_library(client: TestClient, home: Path, corpus: dict, tmp_path: Path) -> None:
    copy = edited_copy(corpus["works"] / "rocket.jpg", tmp_path / "r.jpg")
    r = client.post("/collections/ref/scan", files={"file": ("r.jpg", copy.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["matches"][0]["verdict"] == "copy" and body["matches"][0]["work"]["title"] == "rocket"
    lib = Detector(home).scan("ref", [copy])[0].to_dict()
    assert [m["work"]["id"] for m in body["matches"]] == [m["work"]["id"] for m in lib["matches"]]
    assert [m["score"] for m in body["matches"]] == [m["score"] for m in lib["matches"]]
    # image evidence crosses the boundary whole: region, transform, normalised signal, fpr
    first, lib_first = body["matches"][0], lib["matches"][0]
    for key in ("region", "work_region", "transform", "fpr", "signals"):
        assert first[key] == lib_first[key], key
    assert first["transform"] in ("near-exact", "edited", "partial") and first["fpr"] is not None
    assert set(first["region"]) == {"left", "top", "right", "bottom"}
    assert body["calibration"]["modality"] == "image"


def test_scan_json_text(client: TestClient) -> None:
    text = " ".join(module_doc("csv").split()[:150])
    r = client.post("/collections/ref/scan", json={"text": text, "name": "out.txt"})
    assert r.status_code == 200
    body = r.json()
    best = body["matches"][0]
    assert body["input"] == "out.txt" and best["work"]["title"] == "csv" and best["verdict"] == "copy"
    span = max(best["spans"], key=lambda s: s["words"])
    assert span["kind"] == "verbatim" and text[span["output_start"] : span["output_end"]] == span["output_text"]
    assert best["longest_run_words"] >= 100 and best["coverage"] > 0.9
    assert body["calibration"]["queries"] > 0 and 0 < best["fpr"] < 0.1
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"SpanOut", "CalibrationOut"} <= set(schema)


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"files": {"file": ("x.png", b"not an image", "image/png")}}, 422, "bad_input"),
        ({"files": {"file": ("x.txt", b"", "text/plain")}}, 422, "bad_input"),
        ({"json": {"text": ""}}, 422, "invalid_request"),
        ({"json": {"nope": 1}}, 422, "invalid_request"),
        ({"content": b"raw", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
    ],
)
def test_bad_requests_get_4xx_json(client: TestClient, kwargs: dict, status: int, code: str) -> None:
    r = client.post("/collections/ref/scan", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and r.json()["message"]


def test_missing_collection_is_404(client: TestClient) -> None:
    r = client.post("/collections/nope/scan", json={"text": "hello there"})
    assert r.status_code == 404 and r.json()["error"] == "collection_not_found"
