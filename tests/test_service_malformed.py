"""Malformed uploads to POST /collections/{name}/works and POST /collections/{name}/scan: each gets
a 4xx JSON `{error, message}` whose message names the problem (and the file), and nothing stored
changes: the works list, the collection's generation and count, every file of the collection (by
sha256), and the staging folder `<home>/uploads/` is left empty.

Also uploads that are odd but valid (16-bit, CMYK, palette with transparency, animated, EXIF-turned,
thin): no 5xx. Limits, bombs and a truncated PNG upload are also in tests/test_service_tenants.py;
wrong JSON and content types for scan in tests/test_service.py.

Data: scikit-image's photographs (rocket.jpg, camera.png, horse.png, an animated GIF) and
standard-library docstrings, re-encoded or cut in the tests.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import random
import struct
import sys
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.main import create_app
from service.settings import Settings
from service.tenancy import Tenancy, tenant_home
from tests.conftest import module_doc, skimage_data

MAX_UPLOAD = 150_000
MAX_REQUEST = 400_000


def encoded(img: Image.Image, fmt: str = "PNG", **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring *width* x *height* pixels with one tiny IDAT: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def a_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("story.txt", module_doc("csv"))
    return buf.getvalue()


def an_executable() -> bytes:
    """The start of the running Python interpreter (ELF on Linux, Mach-O, PE)."""
    return Path(sys.executable).resolve().read_bytes()[:20_000]


@dataclass
class Service:
    client: TestClient
    home: Path
    headers: dict[str, str]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """alice's collection 'm' (default encoders: rocket.jpg, camera.png, csv.txt) behind small
    upload limits, scanned once per modality so calibration is done before any snapshot."""
    home = tmp_path_factory.mktemp("malformed")
    headers = {"Authorization": f"Bearer {Tenancy(home).create_key('alice').key}"}
    settings = Settings(home=str(home), max_upload_bytes=MAX_UPLOAD, max_request_bytes=MAX_REQUEST,
                        rate_per_second=1e6, rate_burst=10**6)
    data = skimage_data()
    with TestClient(create_app(settings), headers=headers) as client:
        assert client.post("/collections", json={"name": "m"}).status_code == 201
        files = [("file", (n, (data / n).read_bytes(), "application/octet-stream")) for n in ("rocket.jpg", "camera.png")]
        files.append(("file", ("csv.txt", module_doc("csv").encode(), "text/plain")))
        r = client.post("/collections/m/works", files=files)
        assert r.status_code == 201 and len(r.json()["added"]) == 3, r.text
        horse = encoded(Image.open(data / "horse.png").convert("RGB"))
        for upload in (("horse.png", horse, "image/png"), ("heapq.txt", module_doc("heapq").encode(), "text/plain")):
            assert client.post("/collections/m/scan", files={"file": upload}).status_code == 200
        yield Service(client, home, headers)


def snapshot(s: Service) -> dict:
    """What the collection holds and shows: works, generation, every file's sha256; and staging."""
    folder = tenant_home(s.home, "alice") / "collections" / "m"
    files = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(folder.rglob("*")) if p.is_file()}
    assert files, f"no files under {folder}"
    info = s.client.get("/collections/m").json()
    return {"works": s.client.get("/collections/m/works").json(), "generation": info["generation"],
            "count": info["works"], "files": files}


def staged(s: Service) -> list[Path]:
    return sorted((s.home / "uploads").rglob("*")) if (s.home / "uploads").exists() else []


def _photo(name: str) -> Image.Image:
    return Image.open(skimage_data() / name)


def _cases() -> list[tuple[str, str, bytes, int, str, tuple[str, ...]]]:
    """(case, file name, bytes, status, error code, words the message must contain)."""
    small_png = encoded(_photo("horse.png").convert("RGB"))
    rocket = (skimage_data() / "rocket.jpg").read_bytes()
    noise = random.Random(6).randbytes(4000)
    return [
        ("truncated PNG", "cut.png", small_png[: len(small_png) // 2], 422, "bad_input", ("cut.png", "truncated")),
        ("truncated JPEG", "cut.jpg", rocket[: len(rocket) // 2], 422, "bad_input", ("cut.jpg", "truncated")),
        ("JPEG header only", "head.jpg", rocket[:100], 422, "bad_input", ("head.jpg", "truncated")),
        ("zip named .png", "archive.png", a_zip(), 422, "bad_input", ("archive.png", "not a readable image")),
        ("executable named .png", "prog.png", an_executable(), 422, "bad_input", ("prog.png", "not a readable image")),
        ("text named .png", "story.png", module_doc("csv").encode(), 422, "bad_input",
         ("story.png", "not a readable image")),
        ("binary named .txt", "noise.txt", noise, 422, "bad_input", ("noise.txt", "binary")),
        ("executable named .txt", "prog.txt", an_executable(), 422, "bad_input", ("prog.txt", "binary")),
        ("invalid UTF-8 after a UTF-8 BOM", "bad.txt", codecs.BOM_UTF8 + b"caf\xc3 \xff\xfe cr\xe8me " * 20, 422,
         "bad_input", ("bad.txt", "not UTF-8")),
        ("empty image", "empty.png", b"", 422, "bad_input", ("empty.png", "empty")),
        ("empty text", "empty.txt", b"", 422, "bad_input", ("empty.txt", "empty")),
        ("blank text", "blank.txt", b" \n\t \r\n" * 10, 422, "bad_input", ("blank.txt", "empty")),
        ("image under 8 px a side", "dot.png", encoded(Image.new("RGB", (4, 4), "red")), 422, "bad_input",
         ("dot.png", "too small")),
        ("decompression bomb", "bomb.png", png_header_only(40_000, 40_000), 413, "image_too_large",
         ("bomb.png", "max_image_pixels")),
        ("file over max_upload_bytes", "big.txt", b"word " * (MAX_UPLOAD // 5 + 1), 413, "too_large",
         ("big.txt", f"max_upload_bytes = {MAX_UPLOAD}")),
    ]


CASES = _cases()


@pytest.mark.parametrize("endpoint", ["works", "scan"])
@pytest.mark.parametrize(("name", "data", "status", "code", "words"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_malformed_file_is_4xx_and_nothing_changes(service: Service, endpoint: str, name: str, data: bytes,
                                                   status: int, code: str, words: tuple[str, ...]) -> None:
    before = snapshot(service)
    r = service.client.post(f"/collections/m/{endpoint}", files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message"} and body["error"] == code, body
    assert all(w in body["message"] for w in words), body["message"]
    assert str(service.home) not in r.text  # no server paths
    assert snapshot(service) == before
    assert staged(service) == []


def _requests(endpoint: str) -> list[tuple[str, dict, int, str, tuple[str, ...]]]:
    """Malformed requests: (case, httpx arguments, status, error code, words the message must contain)."""
    multipart = "multipart/form-data"
    ok_text = ("heapq.txt", module_doc("heapq").encode(), "text/plain")
    out = [
        ("empty multipart", {"content": b"--xyz--\r\n", "headers": {"content-type": f"{multipart}; boundary=xyz"}},
         422, "invalid_request", ("'file'",)),
        ("multipart without a boundary", {"content": b"abc", "headers": {"content-type": multipart}},
         400, "bad_multipart", ("boundary",)),
        ("no 'file' field", {"files": {"upload": ok_text}, "data": {"title": "x"}}, 422, "invalid_request", ("'file'",)),
        ("'file' as a plain field", {"files": {"other": ok_text}, "data": {"file": "hello there"}},
         422, "invalid_request", ("'file'",)),
        ("body not multipart", {"content": module_doc("heapq").encode(), "headers": {"content-type": "text/plain"}},
         415, "unsupported_media_type", ("multipart/form-data",)),
        ("body over max_request_bytes", {"content": b"x" * (MAX_REQUEST + 1), "headers": {"content-type": multipart}},
         413, "too_large", (f"max_request_bytes = {MAX_REQUEST}",)),
    ]
    if endpoint == "scan":
        out.append(("two files", {"files": [("file", ok_text), ("file", ("b.txt", b"another output here", "text/plain"))]},
                    400, "bad_multipart", ("Too many files",)))
    else:
        bomb = ("bomb.png", png_header_only(40_000, 40_000), "image/png")
        out += [
            ("JSON body", {"json": {"file": "heapq.txt"}}, 415, "unsupported_media_type", ("multipart/form-data",)),
            ("a bomb beside a good file", {"files": [("file", ok_text), ("file", bomb)]}, 413, "image_too_large",
             ("bomb.png",)),
            ("a file over the limit beside a good file",
             {"files": [("file", ok_text), ("file", ("big.txt", b"word " * (MAX_UPLOAD // 5 + 1), "text/plain"))]},
             413, "too_large", ("big.txt",)),
            ("metadata that is not JSON", {"files": {"file": ok_text}, "data": {"meta": "{not json"}},
             422, "invalid_json", ("'meta'", "not valid JSON")),
            ("metadata naming another file", {"files": {"file": ok_text}, "data": {"meta": '{"other.txt": {}}'}},
             422, "bad_metadata", ("other.txt",)),
        ]
    return out


@pytest.mark.parametrize("endpoint", ["works", "scan"])
def test_malformed_request_is_4xx_and_nothing_changes(service: Service, endpoint: str) -> None:
    problems = []
    for case, kwargs, status, code, words in _requests(endpoint):
        before = snapshot(service)
        r = service.client.post(f"/collections/m/{endpoint}", **kwargs)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if (r.status_code, body.get("error")) != (status, code) or set(body) != {"error", "message"} \
                or not all(w in body["message"] for w in words):
            problems.append(f"{case}: {r.status_code} {r.text[:300]} (expected {status} {code} naming {words})")
        if snapshot(service) != before or staged(service):
            problems.append(f"{case}: something stored changed")
    assert not problems, "\n".join(problems)


def _odd_images() -> dict[str, bytes]:
    """Valid images in forms a decoder may trip on."""
    photo = _photo("rocket.jpg").convert("RGB").resize((240, 160))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    return {
        "gray16.png": encoded(Image.fromarray(np.asarray(_photo("camera.png").resize((200, 200)), np.uint16) * 257)),
        "cmyk.jpg": encoded(photo.convert("CMYK"), "JPEG"),
        "turned.jpg": encoded(photo, "JPEG", exif=exif),
        "palette.png": encoded(palette),
        "alpha.png": encoded(photo.convert("LA")),
        "bilevel.png": encoded(photo.convert("1")),
        "thin.png": encoded(photo.resize((1200, 8))),
        "animated.gif": (skimage_data() / "no_time_for_that_tiny.gif").read_bytes(),
        "photo.webp": encoded(photo, "WEBP"),
    }


def test_odd_but_valid_images_are_not_5xx(service: Service) -> None:
    problems = []
    images = _odd_images()
    for name, data in images.items():
        r = service.client.post("/collections/m/scan", files={"file": (name, data, "application/octet-stream")})
        if r.status_code >= 500 or (r.status_code >= 400 and set(r.json()) != {"error", "message"}):
            problems.append(f"scan {name}: {r.status_code} {r.text[:300]}")
    r = service.client.post("/collections/m/works", files=[("file", (n, d, "application/octet-stream"))
                                                          for n, d in images.items()])
    if r.status_code >= 500:
        problems.append(f"add: {r.status_code} {r.text[:300]}")
    elif r.status_code == 201:
        report = r.json()
        problems += [f"add {f['path']}: {f['error']}" for f in report["failed"]]
        for w in report["added"]:
            assert service.client.delete(f"/collections/m/works/{w['id']}").status_code == 204
    else:
        problems.append(f"add: {r.status_code} {r.text[:300]}")
    assert not problems, "\n".join(problems)
    assert staged(service) == []
