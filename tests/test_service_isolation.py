"""Tenant isolation on every endpoint: each method and path of the app (enumerated from the app,
so a new route is covered without a change here, or fails asking for a value for a new kind of
path parameter) is tried without a key, with a revoked key, with a key's id and a wrong secret,
and with another tenant's key, against alice's private collection, a real work of it and a real
batch of hers; and against her public collection, which bob may scan (and see matches) but not
change or list. No refusal may reveal what alice's collections hold.

Data: scikit-image's photographs and standard-library docstrings (tests/conftest.py).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from service.tenancy import Tenancy
from tests.conftest import module_doc, skimage_data

#: Routes that need no key: liveness, the API's own docs, the web page (it holds no data).
OPEN = {("GET", "/health"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"),
        ("GET", "/redoc"), ("GET", "/")}
#: What another tenant may do with a public collection: scan it, and see what matched.
PUBLIC_READ = {("POST", "/public/{owner}/{name}/scan"), ("POST", "/public/{owner}/{name}/batches"),
               ("GET", "/public/{owner}/{name}/works/{work_id}/thumbnail")}
ENCODERS = ["pdq", "shingles"]  # no neural model: isolation is not about matching quality


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app answers, HEAD aside (Starlette adds it to GET routes)."""
    try:  # FastAPI >= 0.16x keeps included routers whole in app.routes
        from fastapi.routing import iter_route_contexts

        found = [(c.path, c.methods) for c in iter_route_contexts(app.routes)]
    except ImportError:
        found = [(r.path, getattr(r, "methods", None)) for r in app.routes]
    out = []
    for path, methods in found:
        if not methods:  # a mount: everything under it
            raise AssertionError(f"{path}: a mounted app; list what it serves here and whether it needs a key")
        out += [(m, path) for m in sorted(methods) if m != "HEAD"]
    return sorted(set(out))


def show(r) -> str:
    """A response, short, for a failure message."""
    kind = r.headers.get("content-type", "")
    return f"{r.status_code} " + (r.text[:200] if kind.startswith(("application/json", "text/")) else f"<{kind}>")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class World:
    client: TestClient
    keys: dict[str, str]  # alice, bob, revoked, wrong_secret
    works: dict[str, dict[str, dict]]  # collection -> source -> work
    batch_id: str
    secrets: dict[str, list[str]] = field(default_factory=dict)  # collection -> what must not leak


def _files(names: list[str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    data = skimage_data()
    out = []
    for name in names:
        body = module_doc(name[:-4]).encode() if name.endswith(".txt") else (data / name).read_bytes()
        out.append(("file", (name, body, "application/octet-stream")))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """alice: private 'art' (coffee.png, csv.txt) with one batch, public 'pub' (rocket.jpg, json.txt);
    bob: a key and nothing else; carol: a revoked key."""
    home = tmp_path_factory.mktemp("isolation")
    tenancy = Tenancy(home)
    keys = {"alice": tenancy.create_key("alice").key, "bob": tenancy.create_key("bob").key}
    revoked = tenancy.create_key("carol")
    tenancy.revoke_key(revoked.info.id)
    keys["revoked"] = revoked.key
    keys["wrong_secret"] = keys["alice"][:-6] + "AAAAAA"
    a = bearer(keys["alice"])
    with TestClient(create_app(Settings(home=str(home), rate_per_second=1e6, rate_burst=10**6))) as client:
        works: dict[str, dict[str, dict]] = {}
        meta = {"coffee.png": {"title": "Morning coffee", "creator": "A. Painter"},
                "csv.txt": {"title": "Comma separated"}, "rocket.jpg": {"title": "Launch day"},
                "json.txt": {"title": "Object notation"}}
        for coll, names, public in (("art", ["coffee.png", "csv.txt"], False), ("pub", ["rocket.jpg", "json.txt"], True)):
            r = client.post("/collections", json={"name": coll, "encoders": ENCODERS, "public": public}, headers=a)
            assert r.status_code == 201, r.text
            r = client.post(f"/collections/{coll}/works", files=_files(names),
                            data={"meta": json.dumps({n: meta[n] for n in names})}, headers=a)
            assert r.status_code == 201 and len(r.json()["added"]) == 2, r.text
            works[coll] = {w["source"]: w for w in r.json()["added"]}
        r = client.post("/collections/art/batches", files=_files(["coffee.png"]), headers=a)
        assert r.status_code == 202, r.text
        batch_id = r.json()["id"]
        deadline = time.monotonic() + 120
        while client.get(f"/batches/{batch_id}", headers=a).json()["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, "alice's batch did not finish"
            time.sleep(0.2)
        w = World(client, keys, works, batch_id)
        for coll, by_source in works.items():
            w.secrets[coll] = [s for work in by_source.values() for s in
                               (work["id"], work["sha256"], work["title"], work["source"])]
        w.secrets["art"].append(batch_id)
        yield w


MISSING = {"name": "missing0", "batch_id": "0" * 16}  # a collection and a batch alice does not have


def fill(path: str, collection: str, w: World, missing: bool = False) -> str:
    """*path* with its parameters naming alice's real collection, work and batch (or, *missing*,
    a collection and batch that do not exist)."""
    values = {"name": collection, "owner": "alice", "work_id": next(iter(w.works[collection].values()))["id"],
              "batch_id": w.batch_id}
    if missing:
        values |= MISSING
    for param in re.findall(r"{(\w+)(?::\w+)?}", path):
        if param not in values:
            raise AssertionError(f"{path}: a new kind of path parameter {param!r}; give it a real value of "
                                 "alice's in tests/test_service_isolation.py `fill`")
        path = re.sub(r"{" + param + r"(?::\w+)?}", values[param], path)
    return path


def body_for(method: str, path: str) -> dict[str, Any]:
    """A valid request body for *method* *path*, so refusals are about who asks, not what."""
    if method in ("GET", "DELETE"):
        return {}
    if path.endswith("/scan"):
        return {"files": _files(["rocket.jpg"])}
    if path.endswith(("/works", "/batches")):
        return {"files": _files(["heapq.txt"])}
    if method == "PATCH":
        return {"json": {"public": True}}
    if path == "/collections":
        return {"json": {"name": "bobs", "encoders": ["shingles"]}}
    return {"json": {}}


def snapshot(w: World) -> dict:
    """What alice's collections hold and show, and her public flags."""
    a = bearer(w.keys["alice"])
    return {coll: (w.client.get(f"/collections/{coll}", headers=a).json(),
                   w.client.get(f"/collections/{coll}/works", headers=a).json()) for coll in ("art", "pub")}


def leaks(text: str, url: str, secrets: list[str]) -> list[str]:
    for part in url.split("/"):  # a message may name what the request named
        if len(part) > 3:
            text = text.replace(part, "")
    return [s for s in secrets if s in text]


def check_refusal(r, url: str, w: World, allowed: tuple[int, ...]) -> list[str]:
    problems = []
    if r.status_code not in allowed:
        problems.append(f"{r.request.method} {url}: {show(r)} (expected {allowed})")
        return problems
    body = r.json()
    if set(body) != {"error", "message"}:  # no counts, scores, works: only what went wrong
        problems.append(f"{r.request.method} {url}: a refusal with more than an error: {r.text[:200]}")
    found = leaks(r.text, url, w.secrets["art"] + w.secrets["pub"])
    if found:
        problems.append(f"{r.request.method} {url}: reveals {found}: {r.text[:200]}")
    return problems


def test_every_route_is_classified(world: World) -> None:
    """Routes without a key are an explicit list; every other route refuses a request without one."""
    all_routes = routes(world.client.app)
    assert ("GET", "/health") in all_routes and ("POST", "/collections/{name}/scan") in all_routes
    missing_open = OPEN - set(all_routes) - {("GET", "/")}  # the web page may be absent
    assert not missing_open, f"allowlisted routes that no longer exist: {missing_open}"


@pytest.mark.parametrize("who", ["no key", "revoked", "wrong_secret"])
def test_without_a_valid_key_every_route_is_401(world: World, who: str) -> None:
    before = snapshot(world)
    headers = {} if who == "no key" else bearer(world.keys[who])
    problems = []
    for method, path in routes(world.client.app):
        for coll in ("art", "pub"):
            url = fill(path, coll, world)
            r = world.client.request(method, url, headers=headers, **body_for(method, path))
            if (method, path) in OPEN:
                if r.status_code >= 400 or leaks(r.text, url, world.secrets["art"] + world.secrets["pub"]):
                    problems.append(f"{method} {url} (open): {show(r)}")
                continue
            problems += check_refusal(r, url, world, (401,))
            if r.status_code == 401 and r.json()["error"] != "unauthorized":
                problems.append(f"{method} {url}: 401 {r.json()['error']}")
    assert not problems, "\n".join(problems)
    assert snapshot(world) == before


def test_another_tenant_cannot_reach_a_private_collection(world: World) -> None:
    b = bearer(world.keys["bob"])
    before = snapshot(world)
    problems = []
    for method, path in routes(world.client.app):
        if (method, path) in OPEN:
            continue
        url = fill(path, "art", world)
        r = world.client.request(method, url, headers=b, **body_for(method, path))
        if "{" not in path:  # bob's own namespace (his collections, batches): fine, without alice's data
            if r.status_code >= 400:
                problems.append(f"{method} {url}: {show(r)}")
            elif leaks(r.text, url, world.secrets["art"]) or '"owner":"alice","own":false,"public":false' in r.text:
                problems.append(f"{method} {url}: shows alice's private collection: {r.text[:300]}")
            continue
        problems += check_refusal(r, url, world, (401, 403, 404))
        # exactly the answer for a collection (or batch) that does not exist: nothing to tell them apart
        twin = world.client.request(method, fill(path, "art", world, missing=True), headers=b, **body_for(method, path))
        named = twin.text.replace(MISSING["name"], "art").replace(MISSING["batch_id"], world.batch_id)
        if (twin.status_code, named) != (r.status_code, r.text):
            problems.append(f"{method} {url}: {show(r)} but for a missing one: {show(twin)}")
    assert not problems, "\n".join(problems)
    listed = [c["name"] for c in world.client.get("/collections", headers=b).json()]
    assert "alice/art" not in listed and "art" not in listed and "alice/pub" in listed
    assert snapshot(world) == before


def test_a_public_collection_can_be_scanned_not_changed(world: World) -> None:
    b = bearer(world.keys["bob"])
    before = snapshot(world)
    problems = []
    for method, path in routes(world.client.app):
        if (method, path) in OPEN or "{name}" not in path:
            continue
        url = fill(path, "pub", world)
        r = world.client.request(method, url, headers=b, **body_for(method, path))
        if (method, path) in PUBLIC_READ:
            if r.status_code >= 300:
                problems.append(f"{method} {url}: bob may use alice's public collection: {show(r)}")
            continue
        problems += check_refusal(r, url, world, (401, 403, 404, 405))
    assert not problems, "\n".join(problems)
    # the scan is what public is for: bob sees the match
    r = world.client.post("/public/alice/pub/scan", files=_files(["rocket.jpg"]), headers=b)
    best = r.json()["matches"][0]
    assert best["work"]["title"] == "Launch day" and r.json()["collection"] == "alice/pub"
    # one image in the collection: no null, so no error rate and no confident copy, and it says so
    assert best["verdict"] == "similar" and best["fpr"] is None and "no error rate" in best["reason"]
    assert snapshot(world) == before


def test_a_request_without_a_key_is_refused_before_its_body_is_read(world: World) -> None:
    """Regression: FastAPI parsed a JSON body declared as a parameter before any dependency, so a
    request without a key could make the service parse up to max_request_bytes of JSON (and got
    422 for a malformed one instead of 401)."""
    for method, url in (("POST", "/collections"), ("PATCH", "/collections/art")):
        r = world.client.request(method, url, content=b'{"name": ', headers={"content-type": "application/json"})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", (method, r.text)
        r = world.client.request(method, url, content=b"[" + b"0," * 100_000 + b"0]",
                                 headers={"content-type": "application/json"})
        assert r.status_code == 401, (method, r.text)
    b = bearer(world.keys["bob"])  # with a key, the body is checked as before
    r = world.client.post("/collections", content=b'{"name": ', headers={**b, "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_json" and "body" in r.json()["message"]
    r = world.client.patch("/collections/art", json={"public": True}, headers=b)  # alice's: as if missing
    assert r.status_code == 404


def test_open_routes_show_no_tenant_data(world: World) -> None:
    for method, path in sorted(OPEN & set(routes(world.client.app))):
        r = world.client.request(method, path)
        assert r.status_code == 200, (path, r.status_code)
        assert not leaks(r.text, path, world.secrets["art"] + world.secrets["pub"]), path
        assert "alice" not in r.text, path


def test_control_the_owner_reaches_every_route(world: World) -> None:
    """The URLs above name real things: alice's own key gets through on each (DELETEs aside), so
    the refusals above are about who asked."""
    a = bearer(world.keys["alice"])
    problems = []
    for method, path in routes(world.client.app):
        if (method, path) in OPEN or method == "DELETE":
            continue
        url = fill(path, "art", world)
        kwargs = {"json": {"public": False}} if method == "PATCH" else body_for(method, path)
        r = world.client.request(method, url, headers=a, **kwargs)
        if r.status_code in (401, 403, 404, 405) or r.status_code >= 500:
            problems.append(f"{method} {url}: {show(r)}")
    assert not problems, "\n".join(problems)
