"""Are the regions factor4 reports for crops and composites where the copied part really is?

Works: photographs and wallpapers that packages ship, fetched at run time (never committed):
scikit-image's sample photographs (PyPI wheel), OpenCV's example photographs (Debian
`opencv-doc`) and GNOME's wallpapers (Debian `gnome-backgrounds`). A seeded half are reference
works (one collection, sscd + pdq); the rest are the pictures composites are pasted into.

Queries, with the true box of each (seeded):
- **crop**: a random rectangle of a work, 25-70 % of its area, aspect 0.6-1.6, re-encoded as
  JPEG (quality 75-95). True box: the rectangle, in the work's pixels; factor4's answer is the
  match's `work_region` (none: the whole work).
- **composite**: a work scaled to 20-50 % of another picture's area and pasted at a random
  place, JPEG as above. True box: the pasted rectangle, in the output's pixels; factor4's
  answer is the match's `region`.

Methods, on the same queries in one run: factor4 as configured (local features place the
strongest match, `config.LOCATE_KEYPOINTS`); factor4 with SSCD's grid regions only (the
previous method); and the plain baseline of no localisation (the whole work, or the whole
output). A query whose best match is not its source work scores IoU 0 for every method.
Reported: median and mean IoU, the share at IoU >= 0.5 and >= 0.8, and scan time per method.
The goal (issue 22): median IoU >= 0.8 over crops and composites.

    python scripts/bench_regions.py --out /tmp/regions.md          # ~5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import io
import logging
import random
import statistics
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from detector import Detector, config
from detector.packages import debian_package, wheel
from detector.results import Box

log = logging.getLogger("bench_regions")
MAX_SIDE = 1024
MIN_SIDE = 200


def _pictures(cache: Path) -> list[tuple[str, Image.Image]]:
    """(label, picture) of every source that could be fetched, scaled to at most MAX_SIDE."""
    out: list[tuple[str, Image.Image]] = []

    def keep(label: str, data: bytes) -> None:
        try:
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("RGB")
        except (OSError, ValueError):
            return
        if min(im.size) < MIN_SIDE:
            return
        im.thumbnail((MAX_SIDE, MAX_SIDE))
        out.append((label, im))

    try:
        with zipfile.ZipFile(wheel("scikit-image", cache / "wheels")) as zf:
            for name in sorted(zf.namelist()):
                base = name.rsplit("/", 1)[-1]
                if name.startswith("skimage/data/") and base.endswith((".png", ".jpg")) and not base.startswith(
                        ("chessboard", "motorcycle_right", "horse", "phantom", "microaneurysms", "text", "page")):
                    keep(f"skimage/{base}", zf.read(name))
    except Exception as exc:  # noqa: BLE001 - a source that cannot be had is reported and skipped
        log.warning("scikit-image skipped: %s", exc)
    for pkg, folder, pattern in (("opencv-doc", "usr/share/doc/opencv-doc/examples/data", "*.jpg"),
                                 ("gnome-backgrounds", "usr/share/backgrounds/gnome", "*-l.webp")):
        try:
            root, _version = debian_package(pkg, cache)
        except Exception as exc:  # noqa: BLE001
            log.warning("%s skipped: %s", pkg, exc)
            continue
        for f in sorted((root / folder).glob(pattern)):
            if not f.is_symlink():
                keep(f"{pkg}/{f.name}", f.read_bytes())
    return out


@dataclass
class Query:
    kind: str
    work: str  # label of the source work
    path: Path
    truth: Box
    iou: dict[str, float] = field(default_factory=dict)


def _jpeg(im: Image.Image, rng: random.Random, path: Path) -> None:
    im.save(path, "JPEG", quality=rng.randint(75, 95))


def make_queries(refs: list[tuple[str, Image.Image]], bases: list[tuple[str, Image.Image]], folder: Path,
                 rng: random.Random) -> list[Query]:
    out = []
    for k, (label, im) in enumerate(refs):
        area, aspect = rng.uniform(0.25, 0.70), rng.uniform(0.6, 1.6)
        w = min(im.width, max(32, round(im.width * (area * aspect) ** 0.5)))
        h = min(im.height, max(32, round(im.height * (area / aspect) ** 0.5)))
        x, y = rng.randint(0, im.width - w), rng.randint(0, im.height - h)
        path = folder / f"crop-{k}.jpg"
        _jpeg(im.crop((x, y, x + w, y + h)), rng, path)
        out.append(Query("crop", label, path, Box(x, y, x + w, y + h)))

        _, base = bases[rng.randrange(len(bases))]
        share = rng.uniform(0.20, 0.50)
        scale = (share * base.width * base.height / (im.width * im.height)) ** 0.5
        pw, ph = min(base.width, round(im.width * scale)), min(base.height, round(im.height * scale))
        px, py = rng.randint(0, base.width - pw), rng.randint(0, base.height - ph)
        canvas = base.copy()
        canvas.paste(im.resize((pw, ph), Image.Resampling.BICUBIC), (px, py))
        path = folder / f"composite-{k}.jpg"
        _jpeg(canvas, rng, path)
        out.append(Query("composite", label, path, Box(px, py, px + pw, py + ph)))
    return out


def iou(a: Box, b: Box) -> float:
    inter_w = min(a.right, b.right) - max(a.left, b.left)
    inter_h = min(a.bottom, b.bottom) - max(a.top, b.top)
    both = max(0, inter_w) * max(0, inter_h)
    union = a.area + b.area - both
    return both / union if union else 0.0


def score(det: Detector, queries: list[Query], sources: dict[str, str], method: str) -> float:
    """Scan every query; record each method's IoU. Returns seconds per scan."""
    t0 = time.perf_counter()
    for q in queries:
        best = det.scan("bench", [q.path])[0].best
        right = best is not None and best.work.source == sources[q.work]
        if q.kind == "crop":
            w, h = (best.work_size or (0, 0)) if best is not None else (0, 0)
            found = best.work_region if right and best.work_region is not None else Box(0, 0, w, h)
            whole = Box(0, 0, w, h)
        else:
            out_w, out_h = (best.output_size or (0, 0)) if best is not None else (0, 0)
            found = best.region if right and best.region is not None else Box(0, 0, out_w, out_h)
            whole = Box(0, 0, out_w, out_h)
        q.iou[method] = iou(found, q.truth) if right else 0.0
        q.iou.setdefault("whole (no localisation)", iou(whole, q.truth) if right else 0.0)
    return (time.perf_counter() - t0) / max(1, len(queries))


def table(queries: list[Query], methods: list[str], times: dict[str, float]) -> str:
    lines = ["| class | n | method | median IoU | mean IoU | IoU >= 0.5 | IoU >= 0.8 | ms per scan |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for kind in ("crop", "composite", "all"):
        qs = [q for q in queries if kind == "all" or q.kind == kind]
        for m in methods:
            v = [q.iou[m] for q in qs]
            ms = f"{1000 * times[m]:.0f}" if m in times else "-"
            lines.append(f"| {kind} | {len(qs)} | {m} | {statistics.median(v):.3f} | {statistics.fmean(v):.3f} | "
                         f"{sum(x >= 0.5 for x in v) / len(v):.1%} | {sum(x >= 0.8 for x in v) / len(v):.1%} | {ms} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path("~/.cache/factor4-bench").expanduser())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refs", type=int, default=60, help="reference works (default 60)")
    ap.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    pictures = _pictures(args.cache)
    rng = random.Random(args.seed)
    rng.shuffle(pictures)
    n_refs = min(args.refs, len(pictures) // 2)
    refs, bases = pictures[:n_refs], pictures[n_refs:]
    if n_refs < 5 or not bases:
        print(f"bench_regions: only {len(pictures)} pictures could be fetched", file=sys.stderr)
        return 2
    log.info("%d pictures: %d references, %d bases for composites", len(pictures), n_refs, len(bases))
    with tempfile.TemporaryDirectory(prefix="factor4-regions-") as tmp:
        root = Path(tmp)
        (root / "works").mkdir()
        (root / "queries").mkdir()
        sources = {}
        for k, (label, im) in enumerate(refs):
            path = root / "works" / f"w{k:03d}.png"
            im.save(path)
            sources[label] = str(path.resolve())
        queries = make_queries(refs, bases, root / "queries", rng)
        det = Detector(root / "home", background=None)
        det.create("bench", ["sscd", "pdq"])
        det.add("bench", [root / "works"], show_progress_bar=False)
        det.calibrate("bench", queries=300)  # verdicts do not enter IoU; the best match does
        methods = ["factor4 (local features, then SSCD grid)", "factor4, SSCD grid only"]
        times = {}
        config.LOCATE_KEYPOINTS = True
        times[methods[0]] = score(det, queries, sources, methods[0])
        config.LOCATE_KEYPOINTS = False
        times[methods[1]] = score(det, queries, sources, methods[1])
        config.LOCATE_KEYPOINTS = True
        det.close()
    methods.append("whole (no localisation)")
    labels = sorted({label.split("/")[0] for label, _ in pictures})
    report = (f"`python scripts/bench_regions.py{' ' + ' '.join(argv or sys.argv[1:]) if (argv or sys.argv[1:]) else ''}`"
              f" — seed {args.seed}; {len(pictures)} pictures from {', '.join(labels)}; {n_refs} references; "
              f"{len(queries)} queries ({n_refs} crops, {n_refs} composites)\n\n" + table(queries, methods, times))
    print(report)
    if args.out:
        args.out.write_text(report + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
