"""Batch scans through the service: submit, follow, fetch and verify the report; bad
manifests and limits; other tenants; a job left unfinished by a stopped process is resumed.

Data: scikit-image's photographs and standard-library docstrings (tests/conftest.py).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from detector.batch import run_batch
from detector.report import verify
from service.access import Detectors, own
from service.errors import ServiceError
from service.jobs import Jobs, jobs_root
from service.main import create_app
from service.settings import Settings
from service.tenancy import Tenancy
from tests.conftest import edited_copy, module_doc


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def settings(home: Path, **kw: int) -> Settings:
    return Settings(home=str(home), rate_per_second=1000, rate_burst=1000, **kw)


@pytest.fixture(scope="module")
def service_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service-batches")


@pytest.fixture(scope="module")
def keys(service_home: Path) -> dict[str, str]:
    t = Tenancy(service_home)
    return {"alice": t.create_key("alice").key, "bob": t.create_key("bob").key}


@pytest.fixture(scope="module")
def client(service_home: Path, keys: dict[str, str], corpus: dict) -> TestClient:
    with TestClient(create_app(settings(service_home, max_batch_outputs=8))) as c:
        a = bearer(keys["alice"])
        assert c.post("/collections", json={"name": "art"}, headers=a).status_code == 201
        files = [("file", (n, (corpus["works"] / n).read_bytes(), "application/octet-stream"))
                 for n in ("rocket.jpg", "coffee.png", "csv.txt", "json.txt")]  # two texts: error rates for texts
        r = c.post("/collections/art/works", files=files, headers=a)
        assert r.status_code == 201 and len(r.json()["added"]) == 4, r.text
        yield c


def wait_done(client: TestClient, key: str, batch_id: str, timeout: float = 120) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = client.get(f"/batches/{batch_id}", headers=bearer(key))
        assert r.status_code == 200, r.text
        if r.json()["status"] in ("done", "failed"):
            return r.json()
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} not done in {timeout} s: {r.json()}")


def test_batch_with_manifest_gives_a_verifiable_report(client: TestClient, keys: dict[str, str], corpus: dict,
                                                       tmp_path: Path) -> None:
    a = bearer(keys["alice"])
    copy = edited_copy(corpus["works"] / "rocket.jpg", tmp_path / "r.jpg").read_bytes()
    other = (corpus["other"] / "hubble_deep_field.jpg").read_bytes()
    excerpt = " ".join(module_doc("csv").split()[:80])
    lines = [
        {"output": "out-1.jpg", "model": "gen", "model_version": "2", "prompt": "a rocket", "prompt_type": "realistic"},
        {"output": "out-2.jpg", "model": "gen", "model_version": "2", "prompt_type": "realistic"},
        {"text": excerpt, "id": "story-1", "model": "gen", "prompt_type": "adversarial"},
        {"output": "/etc/passwd"},  # not an uploaded file: skipped, never read
        {"output": "../service.db"},
    ]
    manifest = "\n".join(json.dumps(x) for x in lines) + "\n{not json\n"
    files = [("file", ("out-1.jpg", copy, "image/jpeg")), ("file", ("out-2.jpg", other, "image/jpeg")),
             ("manifest", ("m.jsonl", manifest.encode(), "application/jsonl"))]
    r = client.post("/collections/art/batches", files=files, headers=a)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running") and job["outputs"] == 6 and job["collection"] == "art"
    assert "report_json" not in job["links"]

    done = wait_done(client, keys["alice"], job["id"])
    assert done["status"] == "done" and done["done"] == 6 and done["error"] is None, done
    s = done["summary"]
    assert s["scanned"] == {"image": 2, "text": 1} and s["skipped"] == 3
    assert s["outputs_with_copy"] == 2  # the rocket copy and the csv excerpt

    body = client.get(done["links"]["report_json"], headers=a).json()
    reasons = " ".join(x["reason"] for x in body["skipped"])
    assert "'/etc/passwd' is not one of the uploaded files" in reasons and "not valid JSON" in reasons
    titles = {f["work"]["title"]: f["copy"]["count"] for f in body["works"]}
    assert titles.get("rocket") == 1 and titles.get("csv") == 1, titles

    page = client.get(done["links"]["report_html"], headers=a)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"] and "rocket" in page.text

    z = client.get(done["links"]["report_zip"], headers=a)
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    zipfile.ZipFile(io.BytesIO(z.content)).extractall(tmp_path / "unzipped")
    folder = tmp_path / "unzipped" / f"batch-{job['id']}"
    v = verify(folder)
    assert v.ok and v.digest == done["digest"]
    (folder / "results.jsonl").write_text((folder / "results.jsonl").read_text().replace("copy", "similar"))
    assert not verify(folder).ok  # an altered download is caught

    listed = client.get("/batches", headers=a).json()
    assert job["id"] in [b["id"] for b in listed]


def test_other_tenants_and_no_key_cannot_see_a_batch(client: TestClient, keys: dict[str, str], corpus: dict) -> None:
    a, b = bearer(keys["alice"]), bearer(keys["bob"])
    data = (corpus["works"] / "csv.txt").read_bytes()
    r = client.post("/collections/art/batches", files=[("file", ("csv.txt", data, "text/plain"))], headers=a)
    assert r.status_code == 202
    bid = r.json()["id"]
    wait_done(client, keys["alice"], bid)
    for path in (f"/batches/{bid}", f"/batches/{bid}/report.json", f"/batches/{bid}/report.html",
                 f"/batches/{bid}/report.zip"):
        r = client.get(path, headers=b)
        assert r.status_code == 404 and r.json()["error"] == "batch_not_found" and "csv" not in r.text
        assert client.get(path).status_code == 401
    assert client.delete(f"/batches/{bid}", headers=b).status_code == 404
    assert bid not in [x["id"] for x in client.get("/batches", headers=b).json()]
    # bob cannot batch against alice's private collection, and gets the same 404 as for none
    r = client.post("/collections/art/batches", files=[("file", ("x.txt", data, "text/plain"))], headers=b)
    assert r.status_code == 404 and r.json()["error"] == "collection_not_found"
    r = client.post("/public/alice/art/batches", files=[("file", ("x.txt", data, "text/plain"))], headers=b)
    assert r.status_code == 404
    # the owner deletes it; then it is gone
    assert client.delete(f"/batches/{bid}", headers=a).status_code == 204
    assert client.get(f"/batches/{bid}", headers=a).status_code == 404
    assert client.get("/batches/not-an-id", headers=a).status_code == 404


def test_public_collection_batch(client: TestClient, keys: dict[str, str], corpus: dict, tmp_path: Path) -> None:
    a, b = bearer(keys["alice"]), bearer(keys["bob"])
    assert client.patch("/collections/art", json={"public": True}, headers=a).status_code == 200
    try:
        copy = edited_copy(corpus["works"] / "coffee.png", tmp_path / "c.jpg").read_bytes()
        r = client.post("/public/alice/art/batches", files=[("file", ("c.jpg", copy, "image/jpeg"))], headers=b)
        assert r.status_code == 202 and r.json()["collection"] == "alice/art"
        done = wait_done(client, keys["bob"], r.json()["id"])
        assert done["summary"]["outputs_with_copy"] == 1
        assert r.json()["id"] not in [x["id"] for x in client.get("/batches", headers=a).json()]
    finally:
        client.patch("/collections/art", json={"public": False}, headers=a)


@pytest.mark.parametrize(("files", "status", "code", "says"), [
    ([], 422, "invalid_request", "an empty batch"),
    ([("file", ("a.txt", b"hello there", "text/plain")), ("file", ("a.txt", b"other", "text/plain"))],
     422, "invalid_request", "two uploaded files are named 'a.txt'"),
    ([("file", ("a.txt", b"hello there", "text/plain")),
      ("manifest", ("m.jsonl", b'{"text": "x"}\n', "application/jsonl"))],
     422, "bad_manifest", "not named by any manifest line: a.txt"),
    ([("manifest", ("m.jsonl", b"\xff\xfe{", "application/jsonl"))], 422, "bad_manifest", "not UTF-8"),
    ([("file", (f"{i}.txt", f"text {i}".encode(), "text/plain")) for i in range(9)],
     422, "batch_too_large", "max_batch_outputs = 8"),
    ([("manifest", ("m.jsonl", "".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(9)).encode(),
                    "application/jsonl"))], 422, "batch_too_large", "9 outputs exceed max_batch_outputs = 8"),
])
def test_bad_batches_are_refused_and_nothing_kept(client: TestClient, keys: dict[str, str], service_home: Path,
                                                  files: list, status: int, code: str, says: str) -> None:
    root = jobs_root(service_home, "alice")
    before = sorted(p.name for p in root.iterdir()) if root.exists() else []
    r = client.post("/collections/art/batches", files=files or {"nothing": ("", b"", "text/plain")},
                    headers=bearer(keys["alice"]))
    assert r.status_code == status and r.json()["error"] == code and says in r.json()["message"], r.text
    assert (sorted(p.name for p in root.iterdir()) if root.exists() else []) == before


def test_json_body_is_415(client: TestClient, keys: dict[str, str]) -> None:
    r = client.post("/collections/art/batches", json={"text": "x"}, headers=bearer(keys["alice"]))
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"


def test_unfinished_job_is_resumed_at_start(tmp_path: Path, corpus: dict) -> None:
    """A job stopped half-way (as by a shutdown) is taken up by the next process and finished
    without re-scanning what was done."""
    home = tmp_path / "svc"
    key = Tenancy(home).create_key("carol").key
    detectors = Detectors(home)
    det = detectors.get("carol")
    det.create("docs", ["minilm", "shingles"])
    det.add("docs", [corpus["works"] / f"{m}.txt" for m in ("csv", "json", "argparse")], show_progress_bar=False)
    jobs = Jobs(home, detectors)  # not started: nothing runs the job yet
    texts = [(f"{i}.txt", " ".join(module_doc(m).split()[:60]).encode())
             for i, m in enumerate(("csv", "json", "argparse", "heapq", "sched"))]
    job = jobs.submit("carol", own(detectors, "carol", "docs"), texts, None, 100)
    folder = jobs_root(home, "carol") / job.id
    calls = iter(range(100))
    from service.jobs import _read_records

    run = run_batch(det, "docs", _read_records(folder), folder / "report", show_progress_bar=False,
                    stop=lambda: next(calls) >= 2)
    assert run.stopped and run.scanned == 2
    detectors.close()

    with TestClient(create_app(settings(home))) as c:
        done = wait_done(c, key, job.id)
    assert done["status"] == "done" and done["done"] == 5
    lines = [json.loads(x)["line"] for x in (folder / "report" / "results.jsonl").read_text().splitlines()]
    assert sorted(lines) == [1, 2, 3, 4, 5]  # each exactly once
    assert done["summary"]["outputs_with_copy"] == 3


def test_works_are_listed_a_page_at_a_time(client: TestClient, keys: dict[str, str]) -> None:
    a = bearer(keys["alice"])
    everything = client.get("/collections/art/works", headers=a)
    assert everything.headers["x-total-count"] == "4" and "link" not in everything.headers
    ids = [w["id"] for w in everything.json()]
    first = client.get("/collections/art/works?limit=2", headers=a)
    assert [w["id"] for w in first.json()] == ids[:2] and first.headers["x-total-count"] == "4"
    nxt = first.headers["link"].split(">")[0].lstrip("<")
    assert nxt == "/collections/art/works?limit=2&offset=2"
    assert [w["id"] for w in client.get(nxt, headers=a).json()] == ids[2:]
    assert client.get("/collections/art/works?offset=5", headers=a).json() == []
    for bad in ("limit=0", "limit=1001", "offset=-1", "limit=x"):
        r = client.get(f"/collections/art/works?{bad}", headers=a)
        assert r.status_code == 422 and r.json()["error"] == "invalid_request", bad


def test_unexpected_errors_are_json_500_and_the_connection_goes_on(service_home: Path) -> None:
    app = create_app(settings(service_home))

    @app.get("/boom", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app) as c:
        r = c.get("/boom")
        assert r.status_code == 500 and r.json() == {
            "error": "internal_error", "message": "an internal error; the service's log has the details"}
        assert "a bug" not in r.text
        assert c.get("/health").status_code == 200


def test_staging_left_by_a_stopped_server_is_removed_at_start(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    uploads = tmp_path / "uploads"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    for name in (f"staging-{dead}-abc", "batch-old", f"staging-{os.getpid()}-live"):
        (uploads / name / "0").mkdir(parents=True)
        (uploads / name / "0" / "cat.png").write_bytes(b"partial")
    with TestClient(create_app(settings(tmp_path))):
        left = sorted(p.name for p in uploads.iterdir())
    assert left == [f"staging-{os.getpid()}-live"]  # a running process's uploads are kept


def test_a_tenant_may_queue_only_so_many_batches(tmp_path: Path) -> None:
    """Hostile load: past max_pending_batches queued or running, a submission is a 429 naming
    the limit, nothing is stored for it, and another tenant is not held back."""
    home = tmp_path / "svc"
    detectors = Detectors(home)
    for tenant in ("carol", "dave"):
        detectors.get(tenant).create("docs", ["shingles"])
    jobs = Jobs(home, detectors, max_pending=2)  # not started: the jobs stay queued
    text = [("a.txt", b"a few words to scan in a batch")]
    for _ in range(2):
        jobs.submit("carol", own(detectors, "carol", "docs"), text, None, 10)
    with pytest.raises(ServiceError) as info:
        jobs.submit("carol", own(detectors, "carol", "docs"), text, None, 10)
    assert info.value.status == 429 and "max_pending_batches = 2" in info.value.message
    assert len(jobs.list("carol")) == 2
    jobs.submit("dave", own(detectors, "dave", "docs"), text, None, 10)
    with pytest.raises(ServiceError):  # a refused submission (an empty batch) does not use up a place
        jobs.submit("dave", own(detectors, "dave", "docs"), [], None, 10)
    jobs.submit("dave", own(detectors, "dave", "docs"), text, None, 10)
    detectors.close()
