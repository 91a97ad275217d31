"""Service load: 4 concurrent clients mixing uploads and scans against the real HTTP server.

Measures, for `factor4 serve` under a steady mixed load on loopback: errors (any status other
than the one each operation expects, or a broken connection; target 0), latency per operation
(p50 / p99 / max), the server's memory (VmRSS of the server process from /proc, sampled every
few seconds: at the start of the load, at its end, the maximum, and the slope of a linear fit
over the second half; target: flat), the server's CPU, the collection's size and how often a
scan recalibrated it, the CPU other processes on the machine used meanwhile, and the git state.

The script starts its own server (`python -m detector.cli --home H serve`) on 127.0.0.1 (it
refuses any other address), with the rate limit raised out of the way
(`FACTOR4_RATE_PER_SECOND`, `FACTOR4_RATE_BURST`), creates a tenant with one API key per
client and a collection with the default encoders, and preloads `--preload` works. Then
`--clients` threads send requests back to back for `--minutes` (and at most `--max-requests`
requests in all), each picking an operation at random:

- upload one new image or text work (multipart, with its source as `title`);
- scan an edited copy of a stored work (an image crop, re-encoded; a text passage) or an
  unrelated output (a photograph or docstring that is never uploaded), images as multipart
  uploads, texts as JSON;
- list the collection's works.

With `--hostile K` (default 2), K more clients, as another tenant, send hostile requests during
the middle third of the load (the hostile phase): deeply nested JSON in a body, a `meta` field
and a manifest line; numbers past 2**63 and non-finite ones; strings for flags; encoder specs
naming server paths (the collection's own folder, a missing file) and URLs; SVG and PDF
uploads to scan and to works; the first tenant's collection by name. Each must get a 4xx (a 5xx
or a broken connection is a hostile-phase error). The report gives the well-behaved clients'
errors and the server's RSS before, during (peak) and after the hostile phase (goals: no
errors, RSS within 20 % of before).

The collection keeps its size: after each upload, the client removes (DELETE) the oldest
derived work of the same modality (a preloaded one first), so the number of image works and of
text works stays what the preload made, and scans are not slowed by recalibrations. The
reference photographs and docstrings, whole, are never removed (copies are scanned against
them). With `--grow` nothing is removed: the collection grows, and a scan recalibrates it
whenever a modality has grown by 5 % since its last calibration (the other scans of that
modality wait for it); the first scans after the preload show what one calibration costs.
`--server-env NAME=VALUE` sets the server's environment, e.g. MALLOC_ARENA_MAX=2.

All works are real and come from installed packages at run time: scikit-image's sample
photographs, matplotlib's sample photograph and logo, and the docstrings of standard-library
modules. A few photographs and modules are held out (unrelated outputs only). Distinct uploads
are derived from them: random crops and resizes of the photographs (JPEG or PNG), and random
40-300-word windows of the docstrings; each is a distinct work by sha256.

    FACTOR4_HOME=/tmp/load-home python scripts/load_service.py --out /tmp/load.md
    python scripts/load_service.py --minutes 1 --preload 80   # smoke run, about 4 minutes

The home is `--home`, else $FACTOR4_HOME, else a temporary folder (deleted afterwards); a
previous run's collection there is deleted first. The default run takes about 12 minutes on two
busy cores: ~2 minutes to start the server, load the models, preload the 200 works and
calibrate the collection (the first scans: ~1 minute), then the 10-minute load.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import hashlib
import importlib
import importlib.util
import inspect
import io
import ipaddress
import itertools
import json
import logging
import math
import os
import random
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageOps

# the other benchmarks' helpers (scripts/ is not a package)
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_image
import bench_text_scale
from bench_batch import env_pair

from detector import config
from indexes import Store
from service.tenancy import Tenancy, tenant_home

log = logging.getLogger("load_service")

REPO = Path(__file__).resolve().parents[1]
TENANT = "load"
COLLECTION = "load"
HOSTILE_TENANT = "mallory"
HOSTILE_COLLECTION = "mal"
#: Operations and how often clients pick each (weights).
MIX = {
    "upload_image": 0.15,
    "upload_text": 0.15,
    "scan_image_copy": 0.2,
    "scan_image_other": 0.1,
    "scan_text_copy": 0.2,
    "scan_text_other": 0.1,
    "list_works": 0.1,
}
#: The status each operation expects; anything else is an error.
EXPECTED = {"upload_image": 201, "upload_text": 201, "scan_image_copy": 200, "scan_image_other": 200,
            "scan_text_copy": 200, "scan_text_other": 200, "list_works": 200, "remove": 204, "preload": 201}
#: scikit-image photographs: references (uploaded and scanned as copies) and held-out ones
#: (unrelated outputs). Left out: the tiny ones, the TIFFs, and motorcycle_right (a near
#: duplicate of motorcycle_left).
SKIMAGE_REFS = ["astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png", "color.png",
                "grass.png", "gravel.png", "horse.png", "ihc.png", "logo.png", "moon.png", "motorcycle_left.png",
                "page.png", "phantom.png", "rocket.jpg", "text.png"]
SKIMAGE_HELD = ["hubble_deep_field.jpg", "retina.jpg", "coins.png", "clock_motion.png"]
MPL_REFS = ["logo2.png"]
MPL_HELD = ["grace_hopper.jpg"]
#: Standard-library modules whose docstrings are the text works (references) and the unrelated
#: text outputs (held out); each docstring has 40 to 1,800 words.
MODULE_REFS = ["argparse", "csv", "json", "re", "unittest", "heapq", "sched", "typing", "collections", "subprocess",
               "itertools", "difflib", "statistics", "tempfile", "copy", "random", "socket", "ast", "inspect",
               "tokenize", "hashlib", "struct", "time", "os", "sqlite3", "uuid", "doctest", "pdb", "timeit", "gc",
               "sys", "io", "configparser", "plistlib", "getopt"]
MODULE_HELD = ["mimetypes", "trace", "xml", "locale", "gettext", "optparse", "string", "pprint", "errno"]
WORK_SIDE = (256, 640)  # uploaded images: longer side in pixels
WORK_WORDS = (40, 300)
SCAN_WORDS = (30, 150)
MIN_SCAN_WORDS = 40  # a held-out text shorter than this is scanned whole


# -- works and outputs, derived from installed packages --------------------------------------
def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"load_service: the photographs come from {name}; install it (pip install -e '.[test,bench]')")
    return Path(next(iter(spec.submodule_search_locations)))


def load_photos(names: list[str], mpl_names: list[str]) -> dict[str, Image.Image]:
    skimage = _package_dir("skimage") / "data"
    mpl = _package_dir("matplotlib") / "mpl-data" / "sample_data"
    out = {}
    for folder, ns in ((skimage, names), (mpl, mpl_names)):
        for n in ns:
            with Image.open(folder / n) as im:
                im = im.convert("RGBA") if im.mode in ("P", "LA") else im
                if im.mode == "RGBA":  # flatten on white
                    bg = Image.new("RGB", im.size, (255, 255, 255))
                    bg.paste(im, mask=im.getchannel("A"))
                    im = bg
                out[n] = im.convert("RGB")
    return out


def docstrings(modules: list[str]) -> dict[str, list[str]]:
    """Each module's docstring as a list of words."""
    return {m: (inspect.getdoc(importlib.import_module(m)) or "").split() for m in modules}


def encode(img: Image.Image, rng: random.Random) -> bytes:
    buf = io.BytesIO()
    if rng.random() < 0.7:
        img.save(buf, "JPEG", quality=rng.randint(70, 95))
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


def variant(img: Image.Image, rng: random.Random, area: tuple[float, float], side: tuple[int, int]) -> Image.Image:
    """A random crop of *img* (its share of the area in *area*), resized to a longer side in *side*,
    mirrored one time in five."""
    w, h = img.size
    share = rng.uniform(*area)
    cw, ch = max(16, int(w * share**0.5)), max(16, int(h * share**0.5))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    out = img.crop((x, y, x + cw, y + ch))
    long_side = rng.randint(*side)
    scale = long_side / max(out.size)
    out = out.resize((max(16, round(out.width * scale)), max(16, round(out.height * scale))), Image.BICUBIC)
    return ImageOps.mirror(out) if rng.random() < 0.2 else out


def window(words: list[str], rng: random.Random, lo: int, hi: int) -> str:
    n = min(len(words), rng.randint(lo, hi))
    start = rng.randint(0, len(words) - n)
    return " ".join(words[start : start + n])


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes
    title: str
    sha256: str


class Factory:
    """Distinct works to upload and outputs to scan (thread-safe; each caller brings its rng)."""

    def __init__(self) -> None:
        self.ref_photos = load_photos(SKIMAGE_REFS, MPL_REFS)
        self.held_photos = load_photos(SKIMAGE_HELD, MPL_HELD)
        self.ref_texts = {m: w for m, w in docstrings(MODULE_REFS).items() if len(w) >= WORK_WORDS[0]}
        self.held_texts = {m: w for m, w in docstrings(MODULE_HELD).items() if w}
        self._used: set[str] = set()
        self._lock = threading.Lock()
        self._count = 0

    def _claim(self, data: bytes) -> str | None:
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            if sha in self._used:
                return None
            self._used.add(sha)
            self._count += 1
            return sha

    def whole_works(self) -> list[Upload]:
        """Each reference photograph (longer side at most 640 px) and docstring, whole."""
        out = []
        for n, img in self.ref_photos.items():
            im = img.copy()
            im.thumbnail((WORK_SIDE[1], WORK_SIDE[1]))
            buf = io.BytesIO()
            im.save(buf, "PNG")
            data = buf.getvalue()
            out.append(Upload(f"{Path(n).stem}.png", data, n, self._claim(data) or ""))
        for m, words in self.ref_texts.items():
            data = " ".join(words).encode("utf-8")
            out.append(Upload(f"{m}.txt", data, m, self._claim(data) or ""))
        return [u for u in out if u.sha256]

    def image_work(self, rng: random.Random) -> Upload:
        while True:
            src = rng.choice(sorted(self.ref_photos))
            data = encode(variant(self.ref_photos[src], rng, (0.3, 1.0), WORK_SIDE), rng)
            if sha := self._claim(data):
                return Upload(f"{Path(src).stem}-{sha[:8]}.{'jpg' if data[:2] == b'\xff\xd8' else 'png'}",
                              data, src, sha)

    def text_work(self, rng: random.Random) -> Upload:
        while True:
            src = rng.choice(sorted(self.ref_texts))
            data = window(self.ref_texts[src], rng, *WORK_WORDS).encode("utf-8")
            if sha := self._claim(data):
                return Upload(f"{src}-{sha[:8]}.txt", data, src, sha)

    def image_output(self, rng: random.Random, copy: bool) -> tuple[str, bytes]:
        """(source, image bytes): a crop of a reference photograph (whose whole is stored), or of
        a held-out one."""
        photos = self.ref_photos if copy else self.held_photos
        src = rng.choice(sorted(photos))
        return src, encode(variant(photos[src], rng, (0.4, 0.9), (256, 512)), rng)

    def text_output(self, rng: random.Random, copy: bool) -> tuple[str, str]:
        texts = self.ref_texts if copy else self.held_texts
        src = rng.choice(sorted(texts))
        words = texts[src]
        return src, window(words, rng, *SCAN_WORDS) if len(words) > MIN_SCAN_WORDS else " ".join(words)


# -- the server ----------------------------------------------------------------------------------
def check_loopback(host: str) -> str:
    """*host* if it is `localhost` or a loopback address, else exit: this load must not leave the
    machine (names other than localhost are refused, not looked up)."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"load_service: --host {host!r} is not a loopback address; this script only loads a "
                         "server on this machine (use 127.0.0.1, ::1 or localhost)")
    return host


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Server:
    """`factor4 serve` as a child process (the pid is uvicorn's own process)."""

    def __init__(self, home: Path, host: str, port: int, log_path: Path, rate: float,
                 extra_env: dict[str, str]) -> None:
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        env = {**os.environ, "FACTOR4_RATE_PER_SECOND": str(rate), "FACTOR4_RATE_BURST": str(int(rate)),
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra_env}
        env.pop("FACTOR4_HOME", None)
        self.cmd = [sys.executable, "-m", "detector.cli", "--home", str(home), "serve", "--host", host,
                    "--port", str(port)]
        self.log_path = log_path
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"load_service: the server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(self.url + "/health", timeout=2, trust_env=False).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"load_service: the server did not answer /health in {timeout:.0f} s; see {self.log_path}")

    def status(self) -> dict[str, float]:
        """VmRSS and VmHWM (MiB), CPU seconds and threads of the server process."""
        out: dict[str, float] = {}
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) / 1024
                elif key == "Threads":
                    out[key] = int(value)
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            out["cpu"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


# -- the load --------------------------------------------------------------------------------
@dataclass
class Call:
    op: str
    t: float  # seconds since the load started, at the request's start
    seconds: float
    status: str  # HTTP status, or the transport error's name
    ok: bool
    found: bool | None = None  # scans: a copy verdict for the expected source (copies) / for any work (others)
    calibration: tuple[str, int] | None = None  # scans: (modality, generation) of the calibration they used
    client: int = -1
    detail: str = ""  # errors: the response body or the exception


@dataclass
class Shared:
    """State the client threads share."""

    deadline: float
    max_requests: int
    t0: float
    #: modality -> sha256 of the derived works stored, oldest first, and how many to keep (None: all)
    derived: dict[str, collections.deque]
    keep: dict[str, int | None]
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    #: (start, end) of the hostile phase, seconds since the load started
    hostile: tuple[float, float] = (0.0, 0.0)

    def take(self) -> bool:
        with self.lock:
            if self.stop.is_set() or self.started >= self.max_requests or time.monotonic() >= self.deadline:
                return False
            self.started += 1
            return True


def copy_found(body: dict, source: str | None) -> bool:
    """A copy verdict for a work of *source* (by title), or for any work when *source* is None."""
    return any(m["verdict"] == "copy" and (source is None or m["work"].get("title") == source)
               for m in body.get("matches", []))


def client(i: int, url: str, key: str, factory: Factory, shared: Shared, seed: int, timeout: float) -> None:
    rng = random.Random(f"{seed}-client-{i}")
    ops, weights = list(MIX), list(MIX.values())
    base = f"/collections/{COLLECTION}"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout,
                      trust_env=False) as c:

        def call(op: str, send: Callable[[], httpx.Response], check: Callable[[httpx.Response], bool | None]) -> bool:
            t = time.monotonic()
            found = cal = None
            detail = ""
            try:
                r = send()
                status = str(r.status_code)
                ok = r.status_code == EXPECTED[op]
                if ok:
                    found = check(r)
                    ok = found is not False or op.startswith("scan")
                    if op.startswith("scan") and (info := r.json().get("calibration")):
                        cal = (info["modality"], int(info["generation"]))
                if not ok:
                    detail = r.text[:300]
            except httpx.HTTPError as exc:
                status, ok = type(exc).__name__, False
                detail = f"{exc!r} (cause: {exc.__cause__!r})"
            seconds = time.monotonic() - t
            with shared.lock:
                shared.calls.append(Call(op, t - shared.t0, seconds, status, ok, found, cal, i, detail))
            if not ok:
                log.warning("client %d: %s -> %s after %.2f s: %s", i, op, status, seconds, detail)
            return ok

        while shared.take():
            op = rng.choices(ops, weights)[0]
            if op.startswith("upload"):
                work = factory.image_work(rng) if op == "upload_image" else factory.text_work(rng)

                def added(r: httpx.Response, work: Upload = work) -> bool:
                    return [w["sha256"] for w in r.json()["added"]] == [work.sha256]

                ok = call(op, lambda work=work: c.post(base + "/works", files={"file": (work.name, work.data)},
                                                       data={"title": work.title}), added)
                old = None
                modality = op.removeprefix("upload_")
                with shared.lock:
                    stored, keep = shared.derived[modality], shared.keep[modality]
                    if ok:  # (a failed upload may still have been stored: the count then drifts by one)
                        stored.append(work.sha256)
                    if keep is not None and len(stored) > keep:
                        old = stored.popleft()
                if old is not None and shared.take():
                    call("remove", lambda old=old: c.delete(f"{base}/works/{old}"), lambda r: None)
            elif op.startswith("scan_image"):
                copy = op == "scan_image_copy"
                src, data = factory.image_output(rng, copy)
                call(op, lambda data=data: c.post(base + "/scan", files={"file": ("output.jpg", data)}),
                     lambda r, src=src, copy=copy: copy_found(r.json(), src if copy else None))
            elif op.startswith("scan_text"):
                copy = op == "scan_text_copy"
                src, text = factory.text_output(rng, copy)
                call(op, lambda text=text: c.post(base + "/scan", json={"text": text, "name": "output.txt"}),
                     lambda r, src=src, copy=copy: copy_found(r.json(), src if copy else None))
            else:
                call(op, lambda: c.get(base + "/works"), lambda r: isinstance(r.json(), list))


_SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
_DEEP = "[" * 100_000 + "]" * 100_000


#: Hostile kinds that may also be accepted: a batch with a malformed manifest line is (202), the
#: line skipped and listed in its report as `factor4 scan --manifest` does, until the tenant has
#: max_pending_batches queued (then 429).
HOSTILE_ACCEPTED = {"deep_manifest_line": 202}


def hostile_requests(path_there: Path) -> dict[str, Callable[[httpx.Client], httpx.Response]]:
    """The hostile requests, by kind: each must be answered with a 4xx (or as HOSTILE_ACCEPTED
    says). *path_there* is a file that exists on the server (the first tenant's catalog)."""
    victim = f"/public/{TENANT}/{COLLECTION}"
    return {
        "deep_json_body": lambda c: c.post(f"/collections/{HOSTILE_COLLECTION}/scan",
                                           content=('{"text": ' + _DEEP + "}").encode(),
                                           headers={"content-type": "application/json"}),
        "deep_meta_field": lambda c: c.post(f"/collections/{HOSTILE_COLLECTION}/works",
                                            files={"file": ("a.txt", b"a few words")},
                                            data={"meta": '{"a.txt": {"title": ' + _DEEP + "}}"}),
        "deep_manifest_line": lambda c: c.post(f"/collections/{HOSTILE_COLLECTION}/batches", files={
            "manifest": ("m.jsonl", ('{"text": "words", "model": ' + _DEEP + "}\n").encode())}),
        "huge_offset": lambda c: c.get(f"/collections/{HOSTILE_COLLECTION}/works", params={"offset": str(2**63 + 1)}),
        "nan_and_huge_ints": lambda c: c.post(f"/collections/{HOSTILE_COLLECTION}/scan",
                                              content=b'{"text": NaN, "name": ' + b"9" * 5000 + b"}",
                                              headers={"content-type": "application/json"}),
        "string_flag": lambda c: c.patch(f"/collections/{HOSTILE_COLLECTION}", json={"public": "yes"}),
        "server_path_exists": lambda c: c.post("/collections", json={"name": "probe",
                                                                     "encoders": [f"clip:ViT-B-32/{path_there}"]}),
        "server_path_missing": lambda c: c.post("/collections", json={"name": "probe",
                                                                      "encoders": ["clip:ViT-B-32//no/such.pt"]}),
        "url_encoder": lambda c: c.post("/collections", json={"name": "probe",
                                                              "encoders": ["clip:ViT-B-32/https://x.org/w.pt"]}),
        "svg_scan": lambda c: c.post(f"/collections/{HOSTILE_COLLECTION}/scan", files={"file": ("x.png", _SVG)}),
        "svg_work": lambda c: c.post(f"/collections/{HOSTILE_COLLECTION}/works", files={"file": ("x.svg", _SVG)}),
        "pdf_scan": lambda c: c.post(f"/collections/{HOSTILE_COLLECTION}/scan", files={"file": ("x", b"%PDF-1.7 a")}),
        "other_tenant": lambda c: c.delete(f"/collections/{COLLECTION}"),  # mallory's namespace: not there
        "other_tenant_public": lambda c: c.post(victim + "/scan", json={"text": "a few words", "extra": 1}),
    }


def hostile_client(i: int, url: str, key: str, path_there: Path, shared: Shared, seed: int, timeout: float) -> None:
    """Between shared.hostile's start and end, send hostile requests back to back."""
    rng = random.Random(f"{seed}-hostile-{i}")
    kinds = hostile_requests(path_there)
    start, end = shared.hostile
    while time.monotonic() - shared.t0 < start:
        if shared.stop.wait(0.5):
            return
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout,
                      trust_env=False) as c:
        while time.monotonic() - shared.t0 < end and not shared.stop.is_set():
            kind = rng.choice(sorted(kinds))
            t = time.monotonic()
            try:
                r = kinds[kind](c)
                expected = HOSTILE_ACCEPTED.get(kind)
                ok = r.status_code == expected or 400 <= r.status_code < 500
                status, detail = str(r.status_code), r.text[:300]
            except httpx.HTTPError as exc:
                status, ok, detail = type(exc).__name__, False, repr(exc)
            with shared.lock:
                shared.calls.append(Call(f"hostile:{kind}", t - shared.t0, time.monotonic() - t, status, ok,
                                         client=-1 - i, detail="" if ok else detail))
            if not ok:
                log.warning("hostile client %d: %s -> %s: %s", i, kind, status, detail)


@dataclass
class Sample:
    t: float
    rss: float
    hwm: float
    cpu: float
    threads: int
    works: int
    calibrations: tuple[tuple[str, int], ...]


def catalog_state(path: Path) -> tuple[int, tuple[tuple[str, int], ...]]:
    """(works, ((calibration name, generation), ...)) of the collection, read-only."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            works = db.execute("SELECT count(*) FROM works").fetchone()[0]
            cal = tuple(db.execute("SELECT name, generation FROM calibration ORDER BY name").fetchall())
        finally:
            db.close()
    except sqlite3.Error:
        return -1, ()
    return int(works), cal


def sampler(server: Server, catalog: Path, samples: list[Sample], t0: float, every: float,
            stop: threading.Event) -> None:
    while True:
        st = server.status()
        works, cal = catalog_state(catalog)
        if "VmRSS" in st:
            samples.append(Sample(time.monotonic() - t0, st["VmRSS"], st.get("VmHWM", float("nan")),
                                  st.get("cpu", float("nan")), int(st.get("Threads", 0)), works, cal))
        if stop.wait(every):
            return


# -- report ----------------------------------------------------------------------------------
def slope_per_minute(samples: list[Sample]) -> float:
    if len(samples) < 3:
        return float("nan")
    t = np.array([s.t for s in samples]) / 60
    rss = np.array([s.rss for s in samples])
    return float(np.polyfit(t, rss, 1)[0])


def ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x * 1000:,.0f}"


def report(env: dict, calls: list[Call], samples: list[Sample], load_s: float, facts: dict) -> str:
    p = bench_text_scale.pct
    lines = [f"Run of {env['date']} ({env['git']}; {env['machine']}); `{env['command']}`.", ""]
    hostile = [c for c in calls if c.op.startswith("hostile:")]
    calls = [c for c in calls if not c.op.startswith("hostile:")]
    lines.append(f"Load: {facts['clients']} clients for {load_s / 60:.1f} minutes, {len(calls):,} requests "
                 f"({len(calls) / load_s:.1f} per second); other processes used {facts['others']:.2f} cores on "
                 f"average meanwhile" + (f" (most: {'; '.join(facts['others_top'][:3])})" if facts["others_top"]
                                           else "") + f"; the server used {facts['server_cores']:.2f} cores.")
    lines.append("")
    rows = []
    for op in [*MIX, "remove"]:
        mine = [c for c in calls if c.op == op]
        if not mine:
            continue
        secs = [c.seconds for c in mine]
        errors = sum(not c.ok for c in mine)
        found = [c.found for c in mine if c.found is not None]
        hit = f"{sum(found) / len(found):.0%}" if found and op.startswith("scan") else ""
        rows.append([op, f"{len(mine):,}", str(errors), ms(p(secs, 50)), ms(p(secs, 99)), ms(max(secs)), hit])
    secs = [c.seconds for c in calls]
    rows.append(["**all**", f"**{len(calls):,}**", f"**{sum(not c.ok for c in calls)}**", ms(p(secs, 50)),
                 ms(p(secs, 99)), ms(max(secs) if secs else float("nan")), ""])
    lines += bench_text_scale.md_table(
        ["operation", "requests", "errors", "p50 ms", "p99 ms", "max ms", "copy verdict (copies: right source)"],
        rows)
    lines.append("")
    seen: dict[tuple[str, int], Call] = {}
    for c in sorted(calls, key=lambda c: c.t + c.seconds):
        if c.calibration is not None and c.calibration not in seen:
            seen[c.calibration] = c
    new = [c for k, c in seen.items() if k not in facts["calibrations_before"]]
    lines.append(f"Scans during the load used {len(seen)} calibrations; {len(new)} of them made during the load"
                 + (": " + ", ".join(f"{c.calibration[0]} at generation {c.calibration[1]} (first returned at "
                                     f"{c.t / 60:.1f} min, by a scan of {c.seconds:.1f} s)" for c in new[:8])
                    if new else "") + ".")
    lines.append("")
    by_status = collections.Counter(f"{c.op} -> {c.status}" for c in calls if not c.ok)
    lines.append("Errors by status: " + (", ".join(f"{k}: {v}" for k, v in sorted(by_status.items()))
                                         if by_status else "none") + ".")
    details = collections.Counter(f"{c.status}: {c.detail[:160]}" for c in calls if not c.ok)
    if details:
        lines += ["", "Error messages (count):", ""]
        lines += [f"- {n} x `{d}`" for d, n in details.most_common(8)]
    lines.append("")
    half = load_s / 2
    load = [s for s in samples if 0 <= s.t <= load_s + 5]
    second = [s for s in load if s.t >= half]
    if load:
        start, end = load[0], load[-1]
        peak = max(load, key=lambda s: s.rss)
        lines += bench_text_scale.md_table(
            ["server RSS", "MiB"],
            [["before the models (just started)", f"{facts['rss_started']:,.0f}"],
             ["after preload and warm-up = start of the load", f"{start.rss:,.0f}"],
             ["end of the load", f"{end.rss:,.0f}"],
             [f"max during the load (at {peak.t / 60:.1f} min)", f"{peak.rss:,.0f}"],
             ["peak (VmHWM), whole run", f"{end.hwm:,.0f}"],
             ["slope over the second half (linear fit)", f"{slope_per_minute(second):+.2f} per minute"],
             ["slope over the whole load", f"{slope_per_minute(load):+.2f} per minute"],
             ["server threads at the start / end of the load", f"{start.threads} / {end.threads}"]])
        lines.append("")
        cal_changes = sum(a.calibrations != b.calibrations for a, b in itertools.pairwise(load))
        keep = facts["keep"]
        policy = ("nothing removed" if keep["image"] is None else
                  f"each upload replaced the oldest of the {keep['image']} derived image works or "
                  f"{keep['text']} derived text works")
        lines.append(f"Collection: {start.works} works at the start of the load, {max(s.works for s in load)} at "
                     f"most, {end.works} at the end (preloaded {facts['preload']}; {policy}); its stored "
                     f"calibration changed in {cal_changes} of the {len(load) - 1} sampling intervals "
                     f"({facts['sample_every']:.0f} s each). Before the load, the first image scan took "
                     f"{facts['warm']['image'][0]:.1f} s and the first text scan {facts['warm']['text'][0]:.1f} s "
                     f"(each calibrated its modality: {config.CALIBRATION_QUERIES} outputs at "
                     f"most); the next ones {facts['warm']['image'][1]:.2f} s and {facts['warm']['text'][1]:.2f} s.")
        lines.append("")
        per_min = []
        for k in range(int(load_s // 60) + 1):
            win = [s for s in load if k * 60 <= s.t < (k + 1) * 60]
            cs = [c for c in calls if k * 60 <= c.t < (k + 1) * 60]
            if win and cs:
                per_min.append([str(k + 1), f"{len(cs):,}", str(sum(not c.ok for c in cs)),
                                ms(p([c.seconds for c in cs], 50)), ms(p([c.seconds for c in cs], 99)),
                                f"{win[-1].rss:,.0f}", str(win[-1].works)])
        lines += ["Per minute:", ""] + bench_text_scale.md_table(
            ["minute", "requests", "errors", "p50 ms", "p99 ms", "RSS at its end, MiB", "works"], per_min)
        if hostile:
            lines += [""] + hostile_section(calls, hostile, load, facts["hostile_window"], load_s)
    return "\n".join(lines) + "\n"


def hostile_section(calls: list[Call], hostile: list[Call], load: list[Sample], window: tuple[float, float],
                    load_s: float) -> list[str]:
    """Well-behaved clients' errors and the server's RSS before, during and after the hostile
    phase; the hostile requests' answers by kind."""
    start, end = window
    phases = {"before": (0.0, start), "during (hostile)": (start, end), "after": (end, load_s + 5)}
    rows = []
    rss_before = None
    for name, (lo, hi) in phases.items():
        cs = [c for c in calls if lo <= c.t < hi]
        ss = [s.rss for s in load if lo <= s.t < hi] or [float("nan")]
        if name == "before":
            rss_before = ss[-1]
        shown = f"{max(ss):,.0f} (peak)" if name.startswith("during") else f"{ss[-1]:,.0f} (at its end)"
        ratio = (max(ss) if name.startswith("during") else ss[-1]) / rss_before if rss_before else float("nan")
        rows.append([name, f"{lo / 60:.1f}-{min(hi, load_s) / 60:.1f}", f"{len(cs):,}", str(sum(not c.ok for c in cs)),
                     shown, f"{ratio:.2f}"])
    out = [f"Hostile phase: {len(hostile):,} hostile requests from another tenant between {start / 60:.1f} and "
           f"{end / 60:.1f} min, mixed into the load; {sum(not c.ok for c in hostile)} of them answered with "
           "other than a 4xx (a batch whose manifest line is malformed: 202, the line skipped).", ""]
    out += bench_text_scale.md_table(["phase", "minutes", "well-behaved requests", "their errors",
                                      "server RSS, MiB", "RSS / before"], rows)
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for c in hostile:
        by_kind[c.op.removeprefix("hostile:")][c.status] += 1
    out += ["", "Hostile requests by kind (status: count):", ""]
    out += bench_text_scale.md_table(["kind", "answers"], [[k, ", ".join(f"{s}: {n}" for s, n in sorted(v.items()))]
                                                          for k, v in sorted(by_kind.items())])
    return out


# -- main ------------------------------------------------------------------------------------------
def preload(url: str, key: str, works: list[Upload], batch: int) -> list[Call]:
    calls = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600,
                      trust_env=False) as c:
        for i in range(0, len(works), batch):
            chunk = works[i : i + batch]
            meta = {w.name: {"title": w.title} for w in chunk}
            t = time.monotonic()
            r = c.post(f"/collections/{COLLECTION}/works", files=[("file", (w.name, w.data)) for w in chunk],
                       data={"meta": json.dumps(meta)})
            ok = r.status_code == 201 and len(r.json()["added"]) == len(chunk)
            calls.append(Call("preload", 0.0, time.monotonic() - t, str(r.status_code), ok))
            if not ok:
                raise SystemExit(f"load_service: preload failed: {r.status_code} {r.text[:500]}")
    return calls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the load (default %(default)s)")
    ap.add_argument("--max-requests", type=int, default=50_000,
                    help="stop after this many requests in all (default %(default)s)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients (default %(default)s)")
    ap.add_argument("--preload", type=int, default=200,
                    help="works stored before the load: every reference photograph and docstring, then "
                         "derived ones (default %(default)s)")
    ap.add_argument("--grow", action="store_true",
                    help="remove nothing: the collection grows by every upload (and scans recalibrate it)")
    ap.add_argument("--home", type=Path, default=None,
                    help="the server's home (default $FACTOR4_HOME, else a temporary folder)")
    ap.add_argument("--host", default="127.0.0.1", help="loopback address to serve on (default %(default)s)")
    ap.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    ap.add_argument("--rate", type=float, default=10_000.0,
                    help="the server's rate limit per key (FACTOR4_RATE_PER_SECOND and _BURST; default "
                         "%(default)s, out of the way)")
    ap.add_argument("--server-env", action="append", default=[], type=env_pair, metavar="NAME=VALUE",
                    help="add this to the server's environment (repeatable), e.g. MALLOC_ARENA_MAX=2")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a request may take (default %(default)s)")
    ap.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS samples (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the works and the operations (default %(default)s)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="before the load, wait up to this long for other processes to use under "
                         f"{bench_text_scale.QUIET_CORES} cores (default 0: do not wait)")
    ap.add_argument("--hostile", type=int, default=2,
                    help="clients sending hostile requests in the middle third of the load (default %(default)s; "
                         "0: none)")
    ap.add_argument("--out", type=Path, default=None, help="also write the report (markdown) to this file")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    host = check_loopback(args.host)
    if args.clients < 1 or args.minutes <= 0 or args.max_requests < 1 or args.preload < 1:
        ap.error("--clients, --minutes, --max-requests and --preload must be positive")

    env = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "git": bench_image.git_state(REPO),
           "machine": bench_image.machine(),
           "command": "python scripts/load_service.py " + shlex.join(sys.argv[1:] if argv is None else argv)}
    home_arg = args.home or (Path(os.environ["FACTOR4_HOME"]) if os.environ.get("FACTOR4_HOME") else None)
    tmp = None if home_arg else tempfile.TemporaryDirectory(prefix="factor4-load-")
    home = (home_arg or Path(tmp.name)).expanduser().resolve()  # type: ignore[union-attr]
    home.mkdir(parents=True, exist_ok=True)
    factory = Factory()
    rng = random.Random(f"{args.seed}-preload")
    works = factory.whole_works()[: args.preload]
    derived: dict[str, collections.deque] = {"image": collections.deque(), "text": collections.deque()}
    while len(works) < args.preload:
        modality = "image" if len(works) % 2 else "text"
        work = factory.image_work(rng) if modality == "image" else factory.text_work(rng)
        works.append(work)
        derived[modality].append(work.sha256)

    tenancy = Tenancy(home)
    keys = [tenancy.create_key(TENANT) for _ in range(args.clients)]
    hostile_keys = [tenancy.create_key(HOSTILE_TENANT) for _ in range(args.hostile)]
    port = args.port or free_port(host)
    server = Server(home, host, port, home / "load-service.log", args.rate, dict(args.server_env))
    samples: list[Sample] = []
    stop_sampling = threading.Event()
    try:
        up = server.wait_ready()
        rss_started = server.status().get("VmRSS", float("nan"))
        log.info("server pid %d up in %.1f s on %s (RSS %.0f MiB); log: %s", server.proc.pid, up, server.url,
                 rss_started, server.log_path)
        auth = {"Authorization": f"Bearer {keys[0].key}"}
        r = httpx.delete(f"{server.url}/collections/{COLLECTION}", headers=auth, timeout=120, trust_env=False)
        if r.status_code == 204:
            log.info("deleted the previous run's collection %r", COLLECTION)
        t = time.perf_counter()
        r = httpx.post(server.url + "/collections", json={"name": COLLECTION}, headers=auth, timeout=600,
                       trust_env=False)
        if r.status_code != 201:
            raise SystemExit(f"load_service: could not create the collection: {r.status_code} {r.text}")
        log.info("collection created in %.1f s (models loaded)", time.perf_counter() - t)
        if hostile_keys:
            mal = {"Authorization": f"Bearer {hostile_keys[0].key}"}
            httpx.delete(f"{server.url}/collections/{HOSTILE_COLLECTION}", headers=mal, timeout=60, trust_env=False)
            r = httpx.post(server.url + "/collections", json={"name": HOSTILE_COLLECTION, "encoders": ["shingles"]},
                           headers=mal, timeout=60, trust_env=False)
            if r.status_code != 201:
                raise SystemExit(f"load_service: could not create the hostile tenant's collection: {r.text}")
            r = httpx.patch(f"{server.url}/collections/{COLLECTION}", json={"public": True}, headers=auth, timeout=60,
                            trust_env=False)  # so the hostile tenant can reach it at /public/...
        t = time.perf_counter()
        preload(server.url, keys[0].key, works, batch=20)
        log.info("preloaded %d works in %.1f s", len(works), time.perf_counter() - t)
        # warm-up: two scans of each modality; the first one calibrates the collection's modality
        wrng = random.Random(f"{args.seed}-warmup")
        warm: dict[str, list[float]] = {"image": [], "text": []}
        calibrations_before: set[tuple[str, int]] = set()
        with httpx.Client(base_url=server.url, headers=auth, timeout=args.timeout, trust_env=False) as c:
            for copy in (True, False):
                for modality, took in warm.items():
                    t = time.perf_counter()
                    if modality == "image":
                        r = c.post(f"/collections/{COLLECTION}/scan",
                                   files={"file": ("o.jpg", factory.image_output(wrng, copy)[1])})
                    else:
                        r = c.post(f"/collections/{COLLECTION}/scan", json={"text": factory.text_output(wrng, copy)[1]})
                    took.append(time.perf_counter() - t)
                    if r.status_code != 200:
                        raise SystemExit(f"load_service: warm-up scan failed: {r.status_code} {r.text[:300]}")
                    if info := r.json().get("calibration"):
                        calibrations_before.add((info["modality"], int(info["generation"])))
        log.info("warm-up scans: image %s s, text %s s (the first of each calibrates)",
                 " / ".join(f"{x:.1f}" for x in warm["image"]), " / ".join(f"{x:.1f}" for x in warm["text"]))

        if args.wait_quiet > 0:
            log.info("%s", bench_text_scale.wait_quiet(args.wait_quiet))
        catalog = Store(tenant_home(home, TENANT)).path(COLLECTION) / "catalog.sqlite"
        t0 = time.monotonic()
        keep = {m: None if args.grow else len(d) for m, d in derived.items()}
        third = args.minutes * 60 / 3
        shared = Shared(deadline=t0 + args.minutes * 60, max_requests=args.max_requests, t0=t0, derived=derived,
                        keep=keep, hostile=(third, 2 * third))
        watch = bench_text_scale.OtherLoad()
        cpu0 = server.status().get("cpu", float("nan"))
        sampling = threading.Thread(target=sampler, args=(server, catalog, samples, t0, args.sample_every,
                                                          stop_sampling), daemon=True)
        sampling.start()
        threads = [threading.Thread(target=client, args=(i, server.url, keys[i].key, factory, shared, args.seed,
                                                         args.timeout), daemon=True) for i in range(args.clients)]
        threads += [threading.Thread(target=hostile_client, daemon=True,
                                     args=(i, server.url, k.key, catalog, shared, args.seed, args.timeout))
                    for i, k in enumerate(hostile_keys)]
        log.info("load: %d clients for %.1f minutes (at most %d requests)", args.clients, args.minutes,
                 args.max_requests)
        for th in threads:
            th.start()
        next_log = t0 + 60
        while any(th.is_alive() for th in threads):
            for th in threads:
                th.join(1.0)
            if server.proc.poll() is not None:
                shared.stop.set()
                log.error("the server exited with %s during the load; see %s", server.proc.returncode,
                          server.log_path)
            if time.monotonic() >= next_log:
                next_log += 60
                with shared.lock:
                    n, bad = len(shared.calls), sum(not c.ok for c in shared.calls)
                log.info("%.0f min: %d requests, %d errors, server RSS %.0f MiB", (time.monotonic() - t0) / 60, n,
                         bad, server.status().get("VmRSS", float("nan")))
        load_s = time.monotonic() - t0
        others, top = watch.stop()
        cpu1 = server.status().get("cpu", float("nan"))
        stop_sampling.set()
        sampling.join(10)
        # a last sample, after the last request
        st = server.status()
        works_end, cal_end = catalog_state(catalog)
        if "VmRSS" in st:
            samples.append(Sample(load_s, st["VmRSS"], st.get("VmHWM", float("nan")), st.get("cpu", float("nan")),
                                  int(st.get("Threads", 0)), works_end, cal_end))
        # OtherLoad counts a child's CPU as its parent's only once the child has exited: the
        # server is still running, so take its CPU out of the "others" figure here
        server_cores = (cpu1 - cpu0) / load_s
        facts = {"clients": args.clients, "others": max(0.0, others - server_cores), "others_top": top,
                 "rss_started": rss_started, "server_cores": server_cores, "preload": len(works), "keep": keep,
                 "warm": warm, "calibrations_before": calibrations_before, "sample_every": args.sample_every,
                 "hostile_window": shared.hostile}
        text = report(env, shared.calls, samples, load_s, facts)
        for k in keys + hostile_keys:
            tenancy.revoke_key(k.info.id)
    finally:
        stop_sampling.set()
        server.stop()
        if tmp is not None:
            tmp.cleanup()
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        log.info("report written to %s", args.out)
    return 0 if not any(not c.ok for c in shared.calls) else 1


if __name__ == "__main__":
    sys.exit(main())
