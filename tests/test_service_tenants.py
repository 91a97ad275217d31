"""The HTTP service's tenants: API keys, isolation of collections, public collections, limits.

Data: scikit-image's photographs and standard-library docstrings (tests/conftest.py); each
module gets a fresh service home, with keys made through the tenancy API or the CLI.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import struct
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from detector.cli import main
from service.main import create_app
from service.settings import Settings
from service.tenancy import Tenancy
from tests.conftest import edited_copy, jpeg_bytes, module_doc


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def service_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service")


@pytest.fixture(scope="module")
def keys(service_home: Path) -> dict[str, str]:
    t = Tenancy(service_home)
    return {"alice": t.create_key("alice").key, "bob": t.create_key("bob").key}


@pytest.fixture(scope="module")
def client(service_home: Path, keys: dict[str, str]) -> TestClient:
    settings = Settings(home=str(service_home), rate_per_second=1000, rate_burst=1000)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def art(client: TestClient, keys: dict[str, str], corpus: dict) -> dict:
    """Alice's collection 'art': three works uploaded in one request, with metadata."""
    a = bearer(keys["alice"])
    r = client.post("/collections", json={"name": "art"}, headers=a)
    assert r.status_code == 201, r.text
    works = corpus["works"]
    files = [("file", (n, (works / n).read_bytes(), "application/octet-stream"))
             for n in ("rocket.jpg", "coffee.png", "csv.txt")]
    meta = {"rocket.jpg": {"title": "Rocket launch", "creator": "NASA", "licence": "public domain"},
            "csv.txt": {"title": "csv docs"}}
    r = client.post("/collections/art/works", files=files, data={"meta": json.dumps(meta)}, headers=a)
    assert r.status_code == 201, r.text
    report = r.json()
    assert len(report["added"]) == 3 and not report["failed"] and not report["duplicates"]
    return {w["source"]: w for w in report["added"]}


# -- keys --------------------------------------------------------------------------------------
def test_keys_cli_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path)
    assert main(["--home", home, "keys", "create", "acme"]) == 0
    out = capsys.readouterr().out
    key = next(line for line in out.splitlines() if line.startswith("f4_"))
    assert "cannot be shown again" in out
    key_id, secret = key.split("_", 2)[1:]
    assert main(["--home", home, "keys", "create", "zenith"]) == 0
    capsys.readouterr()

    assert main(["--home", home, "keys", "list", "--tenant", "acme"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "acme" in listed and "zenith" not in listed
    assert secret not in listed and key not in listed

    db = tmp_path / "service.db"
    rows = sqlite3.connect(db).execute("SELECT id, tenant, sha256, revoked_utc FROM keys WHERE id = ?",
                                       (key_id,)).fetchall()
    assert rows == [(key_id, "acme", hashlib.sha256(secret.encode()).hexdigest(), None)]
    assert secret.encode() not in db.read_bytes()
    assert Tenancy(home).authenticate(key).tenant == "acme"

    assert main(["--home", home, "keys", "revoke", key_id]) == 0
    capsys.readouterr()
    assert Tenancy(home).authenticate(key) is None
    assert main(["--home", home, "keys", "list"]) == 0
    assert "revoked" in capsys.readouterr().out

    assert main(["--home", home, "keys", "revoke", "nosuchid"]) == 2
    assert main(["--home", home, "keys", "create", "no/slash"]) == 2
    assert "invalid tenant name" in capsys.readouterr().err


def test_unauthenticated_requests_get_401(client: TestClient, keys: dict[str, str], service_home: Path) -> None:
    assert client.get("/health").status_code == 200
    revoked = Tenancy(service_home).create_key("carol")
    Tenancy(service_home).revoke_key(revoked.info.id)
    wrong_secret = keys["alice"][:-4] + "AAAA"
    for headers in ({}, bearer("nonsense"), bearer(wrong_secret), bearer(revoked.key), {"X-API-Key": "f4_x_y"}):
        for method, url in (("GET", "/collections"), ("POST", "/collections/art/scan"), ("GET", "/version")):
            r = client.request(method, url, headers=headers, json={"text": "hello"})
            assert r.status_code == 401, (headers, url, r.text)
            assert r.json()["error"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
    r = client.get("/version", headers={"X-API-Key": keys["alice"]})
    assert r.status_code == 200 and r.json()["factor4"] and "fastapi" in r.json()["packages"]


# -- one tenant ---------------------------------------------------------------------------------
def test_owner_adds_lists_and_scans(client: TestClient, keys: dict[str, str], art: dict, corpus: dict,
                                    tmp_path: Path) -> None:
    a = bearer(keys["alice"])
    assert art["rocket.jpg"]["title"] == "Rocket launch" and art["rocket.jpg"]["creator"] == "NASA"
    assert art["coffee.png"]["title"] == "coffee"  # no metadata: the file name
    r = client.get("/collections/art/works", headers=a)
    assert r.status_code == 200 and {w["source"] for w in r.json()} == set(art)
    wid = art["csv.txt"]["id"]
    r = client.get(f"/collections/art/works/{wid}", headers=a)
    assert r.status_code == 200 and r.json()["title"] == "csv docs"
    assert client.get("/collections/art/works/0000000000000000", headers=a).json()["error"] == "work_not_found"

    r = client.get("/collections/art", headers=a)
    assert r.status_code == 200
    info = r.json()
    assert info["works"] == 3 and info["own"] and not info["public"] and info["owner"] == "alice"

    copy = edited_copy(corpus["works"] / "rocket.jpg", tmp_path / "r.jpg")
    r = client.post("/collections/art/scan", files={"file": ("r.jpg", copy.read_bytes(), "image/jpeg")}, headers=a)
    assert r.status_code == 200, r.text
    best = r.json()["matches"][0]
    assert best["verdict"] == "copy" and best["work"]["title"] == "Rocket launch" and r.json()["collection"] == "art"
    assert best["work"]["source"] == "rocket.jpg"  # no server path

    # one file with metadata as form fields; the same file again is a duplicate
    doc = module_doc("json").encode()
    r = client.post("/collections/art/works", files={"file": ("json.txt", doc, "text/plain")},
                    data={"title": "json docs", "creator": "PSF"}, headers=a)
    assert r.status_code == 201 and r.json()["added"][0]["title"] == "json docs"
    r = client.post("/collections/art/works", files={"file": ("again.txt", doc, "text/plain")}, headers=a)
    assert r.status_code == 201 and len(r.json()["duplicates"]) == 1 and not r.json()["added"]
    json_id = r.json()["duplicates"][0]["id"]
    text = " ".join(module_doc("json").split()[:120])
    r = client.post("/collections/art/scan", json={"text": text}, headers=a)
    assert r.status_code == 200 and r.json()["matches"][0]["work"]["title"] == "json docs"
    assert client.delete(f"/collections/art/works/{json_id}", headers=a).status_code == 204
    assert client.get(f"/collections/art/works/{json_id}", headers=a).status_code == 404


def test_duplicate_and_bad_collections(client: TestClient, keys: dict[str, str], art: dict) -> None:
    a = bearer(keys["alice"])
    r = client.post("/collections", json={"name": "art"}, headers=a)
    assert r.status_code == 409 and r.json()["error"] == "collection_exists"
    assert "/" not in r.json()["message"]  # no server path
    r = client.post("/collections", json={"name": "../etc"}, headers=a)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    r = client.post("/collections", json={"name": "x", "encoders": ["nope"]}, headers=a)
    assert r.status_code == 422 and r.json()["error"] == "unknown_encoder" and "GET /encoders" in r.json()["message"]
    # bob may use the same name: his own namespace
    b = bearer(keys["bob"])
    r = client.post("/collections", json={"name": "art", "encoders": ["pdq"]}, headers=b)
    assert r.status_code == 201 and r.json()["works"] == 0
    assert client.delete("/collections/art", headers=b).status_code == 204
    assert client.get("/collections/art", headers=a).json()["works"] >= 3  # alice's untouched


# -- isolation -----------------------------------------------------------------------------------
def _bob_requests(corpus: dict, wid: str) -> list[tuple[str, str, dict]]:
    image = (corpus["works"] / "rocket.jpg").read_bytes()
    return [
        ("GET", "/collections/art", {}),
        ("PATCH", "/collections/art", {"json": {"public": True}}),
        ("DELETE", "/collections/art", {}),
        ("GET", "/collections/art/works", {}),
        ("GET", f"/collections/art/works/{wid}", {}),
        ("DELETE", f"/collections/art/works/{wid}", {}),
        ("POST", "/collections/art/works", {"files": {"file": ("x.jpg", image, "image/jpeg")}}),
        ("POST", "/collections/art/scan", {"files": {"file": ("x.jpg", image, "image/jpeg")}}),
        ("POST", "/collections/art/scan", {"json": {"text": "hello there general"}}),
        ("POST", "/public/alice/art/scan", {"json": {"text": "hello there general"}}),
    ]


def _leaks(body: str, art: dict) -> list[str]:
    secrets_ = [w["id"] for w in art.values()] + [w["title"] for w in art.values()] + list(art)
    return [s for s in secrets_ if s in body]


def test_other_tenant_gets_404_for_private_collection(client: TestClient, keys: dict[str, str], art: dict,
                                                      corpus: dict) -> None:
    b = bearer(keys["bob"])
    missing = client.get("/collections/nope", headers=b)
    assert missing.status_code == 404
    for method, url, kwargs in _bob_requests(corpus, art["rocket.jpg"]["id"]):
        r = client.request(method, url, headers=b, **kwargs)
        assert r.status_code == 404, (method, url, r.text)
        assert r.json()["error"] == "collection_not_found"
        assert not _leaks(r.text, art), (method, url, r.text)
        assert "works" not in r.json()
    r = client.get("/collections", headers=b)
    assert r.status_code == 200 and all(c["owner"] == "bob" for c in r.json())
    assert not _leaks(r.text, art)
    # alice's collection is intact
    assert client.get("/collections/art", headers=bearer(keys["alice"])).json()["works"] >= 3


def test_public_collection_is_scannable_not_writable(client: TestClient, keys: dict[str, str], art: dict,
                                                     corpus: dict, tmp_path: Path) -> None:
    a, b = bearer(keys["alice"]), bearer(keys["bob"])
    r = client.patch("/collections/art", json={"public": True}, headers=a)
    assert r.status_code == 200 and r.json()["public"]
    try:
        listed = {c["name"]: c for c in client.get("/collections", headers=b).json()}
        assert listed["alice/art"]["public"] and not listed["alice/art"]["own"]
        assert listed["alice/art"]["scan_url"] == "/public/alice/art/scan"

        copy = edited_copy(corpus["works"] / "rocket.jpg", tmp_path / "r.jpg")
        r = client.post("/public/alice/art/scan", files={"file": ("r.jpg", copy.read_bytes(), "image/jpeg")},
                        headers=b)
        assert r.status_code == 200, r.text
        assert r.json()["collection"] == "alice/art" and r.json()["matches"][0]["verdict"] == "copy"

        # still only alice may change it
        image = (corpus["works"] / "chelsea.png").read_bytes()
        assert client.post("/collections/art/works", files={"file": ("c.png", image, "image/png")},
                           headers=b).status_code == 404
        assert client.delete("/collections/art", headers=b).status_code == 404
        assert client.delete(f"/collections/art/works/{art['coffee.png']['id']}", headers=b).status_code == 404
        assert client.patch("/collections/art", json={"public": False}, headers=b).status_code == 404
        assert client.post("/public/alice/art/works", files={"file": ("c.png", image, "image/png")},
                           headers=b).status_code in (404, 405)
        assert client.get("/collections/art", headers=a).json()["works"] >= 3
        # a public collection that does not exist, and an invalid owner: 404
        assert client.post("/public/alice/nope/scan", json={"text": "hi there"}, headers=b).status_code == 404
        assert client.post("/public/no..pe/art/scan", json={"text": "hi there"}, headers=b).status_code == 404
    finally:
        assert client.patch("/collections/art", json={"public": False}, headers=a).status_code == 200
    r = client.post("/public/alice/art/scan", json={"text": "hello there general"}, headers=b)
    assert r.status_code == 404 and not _leaks(r.text, art)


# -- limits --------------------------------------------------------------------------------------
def _png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring *width* x *height* pixels, with one tiny IDAT: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def small(service_home: Path, keys: dict[str, str], art: dict) -> TestClient:
    """The same home behind tiny limits."""
    settings = Settings(home=str(service_home), max_request_bytes=200_000, max_upload_bytes=150_000,
                        max_text_chars=50, max_files_per_upload=2, max_image_pixels=100_000,
                        rate_per_second=1000, rate_burst=1000)
    with TestClient(create_app(settings)) as c:
        yield c


def test_oversize_request_is_413(small: TestClient, keys: dict[str, str], service_home: Path) -> None:
    a = bearer(keys["alice"])
    big = b"x" * 300_000
    r = small.post("/collections/art/works", files={"file": ("big.txt", big, "text/plain")}, headers=a)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert "max_request_bytes = 200000" in r.json()["message"]

    def chunks():  # no Content-Length: refused while streaming
        for _ in range(10):
            yield b"y" * 50_000

    r = small.post("/collections/art/scan", content=chunks(),
                   headers={**a, "content-type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 413 and "max_request_bytes = 200000" in r.json()["message"]
    r = small.post("/collections/art/scan", files={"file": ("b.txt", b"word " * 34_000, "text/plain")}, headers=a)
    assert r.status_code == 413 and "max_upload_bytes = 150000" in r.json()["message"]


def test_text_and_file_count_limits_are_422(small: TestClient, keys: dict[str, str], corpus: dict) -> None:
    a = bearer(keys["alice"])
    r = small.post("/collections/art/scan", json={"text": "word " * 20}, headers=a)
    assert r.status_code == 422 and r.json()["error"] == "text_too_long"
    assert "max_text_chars = 50" in r.json()["message"]
    files = [("file", (f"{m}.txt", module_doc(m).encode()[:2000], "text/plain")) for m in ("heapq", "sched", "re")]
    r = small.post("/collections/art/works", files=files, headers=a)
    assert r.status_code == 422 and r.json()["error"] == "too_many_files"
    assert "max_files_per_upload = 2" in r.json()["message"]


def test_big_images_and_bombs_are_refused_and_nothing_stored(small: TestClient, client: TestClient,
                                                             keys: dict[str, str], photos: dict,
                                                             service_home: Path) -> None:
    a = bearer(keys["alice"])
    before = client.get("/collections/art", headers=a).json()["works"]
    photo = jpeg_bytes(photos["chelsea"])  # 451x300 = 135300 pixels > 100000
    r = small.post("/collections/art/works", files={"file": ("cat.jpg", photo, "image/jpeg")}, headers=a)
    assert r.status_code == 413 and r.json()["error"] == "image_too_large"
    assert "max_image_pixels = 100000" in r.json()["message"]
    r = small.post("/collections/art/scan", files={"file": ("cat.jpg", photo, "image/jpeg")}, headers=a)
    assert r.status_code == 413 and r.json()["error"] == "image_too_large"

    bomb = _png_header_only(40_000, 40_000)
    for c in (small, client):  # the service limit, then the library's default one
        r = c.post("/collections/art/works", files=[("file", ("bomb.png", bomb, "image/png")),
                                                   ("file", ("ok.txt", module_doc("heapq").encode(), "text/plain"))],
                   headers=a)
        assert r.status_code == 413 and r.json()["error"] == "image_too_large", r.text
        assert "bomb.png" in r.json()["message"]
        r = c.post("/collections/art/scan", files={"file": ("bomb.png", bomb, "image/png")}, headers=a)
        assert 400 <= r.status_code < 500
    assert client.get("/collections/art", headers=a).json()["works"] == before
    assert not list((service_home / "uploads").glob("*/*"))  # staging cleaned up


def test_corrupt_upload_is_422(client: TestClient, keys: dict[str, str]) -> None:
    a = bearer(keys["alice"])
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, "PNG")
    r = client.post("/collections/art/works", files={"file": ("bad.png", buf.getvalue()[:60], "image/png")},
                    headers=a)
    assert r.status_code == 422 and r.json()["error"] == "bad_input" and "bad.png" in r.json()["message"]
    assert str(client.app.state.home) not in r.text


def test_rate_limit_is_429_with_retry_after(service_home: Path, keys: dict[str, str]) -> None:
    settings = Settings(home=str(service_home), rate_per_second=0.5, rate_burst=3)
    with TestClient(create_app(settings)) as c:
        codes = [c.get("/version", headers=bearer(keys["bob"])).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.get("/version", headers=bearer(keys["bob"]))
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1 and "rate_per_second = 0.5" in r.json()["message"]
        assert c.get("/version", headers=bearer(keys["alice"])).status_code == 200  # per key
        assert c.get("/health").status_code == 200  # no key, no limit


def test_relative_home_hides_server_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    key = Tenancy("rel").create_key("dana").key
    with TestClient(create_app(Settings(home="rel"))) as c:
        assert c.post("/collections", json={"name": "t", "encoders": ["shingles"]}, headers=bearer(key)).status_code == 201
        r = c.post("/collections/t/works", files={"file": ("csv.txt", module_doc("csv").encode(), "text/plain")},
                   headers=bearer(key))
        assert r.status_code == 201 and r.json()["added"][0]["source"] == "csv.txt"
        r = c.post("/collections", json={"name": "t"}, headers=bearer(key))
        assert r.status_code == 409 and str(tmp_path) not in r.text
