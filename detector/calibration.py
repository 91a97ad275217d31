"""The null of a collection: unrelated outputs in its own domain, edited as outputs are.

A false-positive rate is only as good as the unrelated outputs it is measured on. They should
look like what users scan: in the collection's own style and vocabulary (the hard case: plays
by one author share more words with each other than with a chemistry manual) and edited the
way copies are edited, so that an edit does not by itself look like evidence. So each
collection makes its null from its own works (`detector.nullmodel` turns it into rates and
verdicts):

- **Texts:** windows of `config.CALIBRATION_TEXT_WORDS` words at random places, as they are,
  reworded (a share of the words replaced by words of other works), reordered (sentences
  shuffled), cut down (sentences dropped), and reordered and reworded.
- **Images:** the works' stored thumbnails as they are (once each), recompressed, cropped, pasted into another work,
  framed, captioned, blurred, recoloured, mirrored, rotated, and combined edits (crop + frame +
  caption, mirror + crop + recompress, downscale + blur).

Each output is scanned with its source work *and its near-duplicates* left out, as if they
were not in the collection: two editions of one text, or recoloured variants of one drawing,
would otherwise make each other's outputs look like copies. Texts that share at least
`config.NEAR_DUPLICATE_SHARE` of their n-gram keys, and images whose SSCD descriptors (whole or
regional) reach the copy cut point, are one group, sampled as one work and left out together.

Users add their own negatives (outputs of their model for unrelated prompts): scanned with
nothing left out, judged against the collection's own null first; a negative that is in fact a
copy of a reference (its verdict is ``copy``) is reported and left out.

Limits: the outputs are edits of the collection's works, not real outputs of a model; with few
works they are many edits of few pictures or texts, which are not independent samples; with
fewer than two unrelated works (and no negatives) there is no null and no error rate.
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from detector import config, signals
from detector.works import word_spans
from indexes import Collection

log = logging.getLogger(__name__)

TEXT_EDITS = ("as is", "reworded", "reordered", "cut down", "reordered + reworded")
IMAGE_EDITS = ("as is", "recompressed", "cropped", "composite", "framed", "captioned", "blurred", "recoloured", "mirrored",
               "rotated", "crop + frame + caption", "mirror + crop + recompress", "downscale + blur")
TEXT_METHOD = ("windows of {lengths} words from the collection's texts, as they are, reworded, reordered and "
               "cut down; source work and near-duplicates left out")
IMAGE_METHOD = ("the collection's images as they are, cropped, pasted into another, framed, captioned, blurred, "
                "recoloured, mirrored, rotated and combined edits; source works and near-duplicates left out")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n\s*\n")


@dataclass(frozen=True)
class NullOutput:
    """One unrelated output: what to scan, which works to leave out, and how it was made."""

    item: str | Image.Image
    exclude: frozenset[str]
    edit: str


def makeup(outputs: list[NullOutput]) -> tuple[tuple[str, int], ...]:
    counts = Counter(o.edit for o in outputs)
    return tuple(sorted(counts.items(), key=lambda kv: -kv[1]))


def near_duplicate_groups(coll: Collection, work_ids: list[str], channel: str = "shingles") -> dict[str, frozenset[str]]:
    """For each work, the works (itself included) that share at least
    `config.NEAR_DUPLICATE_SHARE` of either one's n-gram keys with it."""
    keys_of = {w: coll.work_keys(w, channel) for w in work_ids}
    sizes = {w: len(k) for w, k in keys_of.items()}
    groups: dict[str, set[str]] = {w: {w} for w in work_ids}
    for w in work_ids:
        keys = keys_of[w]
        if len(keys) == 0:
            continue
        shared: dict[str, set[int]] = {}
        for key, other, _pos in coll.lookup_postings(channel, keys):
            if other != w:
                shared.setdefault(other, set()).add(key)
        for other, ks in shared.items():
            size = min(sizes[w], sizes.get(other) or len(coll.work_keys(other, channel)))
            if size and len(ks) >= config.NEAR_DUPLICATE_SHARE * size:
                groups[w].add(other)
                groups.setdefault(other, {other}).add(w)
    return {w: frozenset(g) for w, g in groups.items()}


def text_outputs(coll: Collection, queries: int) -> list[NullOutput] | None:
    """*queries* unrelated text outputs from the collection's texts (None if it has fewer than
    two works that are not near-duplicates of each other)."""
    works = coll.works("text")
    if len(works) < 2:
        return None
    rng = np.random.default_rng(coll.generation)
    ids = [w.id for w in works]
    if len(ids) > config.CALIBRATION_MAX_WORKS:
        ids = sorted(rng.choice(ids, config.CALIBRATION_MAX_WORKS, replace=False).tolist())
    has_keys = any(c.name == "shingles" for c in coll.manifest.channels)
    groups = near_duplicate_groups(coll, ids) if has_keys else {w: frozenset({w}) for w in ids}
    if all(len(groups[w]) >= len(works) for w in ids):
        return None  # every work is a near-duplicate of every other: nothing unrelated to learn from
    bodies = {w: coll.text(w) or "" for w in ids}
    spans = {w: word_spans(b) for w, b in bodies.items()}
    ids = [w for w in ids if spans[w]]
    if len(ids) < 2:
        return None
    per_work = max(1, math.ceil(queries / len(ids)))
    lengths = config.CALIBRATION_TEXT_WORDS
    outputs: list[NullOutput] = []
    for n, wid in enumerate(ids):
        body, sp = bodies[wid], spans[wid]
        others = [w for w in ids if w not in groups[wid]] or [w for w in ids if w != wid]
        for k in range(per_work):
            size = min(lengths[k % len(lengths)], len(sp))
            start = int(rng.integers(0, len(sp) - size + 1))
            text = body[sp[start][0] : sp[start + size - 1][1]]
            edit = TEXT_EDITS[(k + n) % len(TEXT_EDITS)]
            donor = others[int(rng.integers(0, len(others)))]
            outputs.append(NullOutput(edit_text(text, edit, bodies[donor], rng), groups[wid], edit))
    rng.shuffle(outputs)
    return outputs[:queries]


def edit_text(text: str, edit: str, donor: str, rng: np.random.Generator) -> str:
    """*text* edited as outputs are (one of `TEXT_EDITS`); reworded text takes its new words
    from *donor*."""
    if "reordered" in edit or "cut down" in edit:
        sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
        if len(sentences) > 1:
            if "cut down" in edit:
                keep = max(1, round(len(sentences) * (1 - config.CALIBRATION_CUT_SHARE)))
                chosen = sorted(rng.choice(len(sentences), keep, replace=False).tolist())
                sentences = [sentences[i] for i in chosen]
            else:
                sentences = [sentences[i] for i in rng.permutation(len(sentences))]
            text = " ".join(sentences)
    if "reworded" in edit:
        vocab = [donor[a:b] for a, b in word_spans(donor) if b - a >= 4]
        if vocab:
            pieces: list[str] = []
            last = 0
            for a, b in word_spans(text):
                if b - a >= 4 and rng.random() < config.CALIBRATION_REWORD_SHARE:
                    pieces.append(text[last:a])
                    pieces.append(vocab[int(rng.integers(0, len(vocab)))])
                    last = b
            pieces.append(text[last:])
            text = "".join(pieces)
    return text


def image_near_duplicate_groups(coll: Collection, work_ids: list[str], channel: str) -> dict[str, frozenset[str]]:
    """For each work, the works (itself included) whose descriptor in *channel*, whole or of a
    region, is within the copy threshold of its whole descriptor (SSCD cosine, or PDQ distance
    for a PDQ channel)."""
    spec = coll.manifest.channel(channel)
    binary = spec.kind == "binary"
    prior = signals.get("pdq_distance" if binary else channel).prior
    if prior is None:
        raise ValueError(f"channel {channel!r} has no copy cut point to group near-duplicates by")
    copy = prior[2]
    whole = {w: coll.work_segments(w)[0].id for w in work_ids}
    vectors = coll.vectors(channel, list(whole.values()))
    scores, ids = coll.search(channel, vectors, config.IMAGE_SEARCH_K)
    segs = coll.segments(np.unique(ids[ids >= 0]).tolist())
    groups: dict[str, set[str]] = {w: {w} for w in work_ids}
    for w, row_scores, row_ids in zip(work_ids, scores, ids, strict=True):
        for s, i in zip(row_scores.tolist(), row_ids.tolist(), strict=True):
            seg = segs.get(int(i)) if i >= 0 else None
            if seg is not None and (s <= copy if binary else s >= copy):
                groups[w].add(seg.work_id)
                groups.setdefault(seg.work_id, {seg.work_id}).add(w)
    return {w: frozenset(g) for w, g in groups.items()}


def image_outputs(coll: Collection, channel: str, queries: int) -> list[NullOutput] | None:
    """*queries* unrelated image outputs from the works' thumbnails; *channel* (SSCD, or PDQ)
    decides near-duplicates. None if there are fewer than two unrelated works."""
    works = coll.works("image")
    if len(works) < 2:
        return None
    rng = np.random.default_rng(coll.generation)
    order = [works[i].id for i in rng.permutation(len(works))]
    picked: list[str] = []
    covered: set[str] = set()
    groups: dict[str, frozenset[str]] = {}
    for start in range(0, len(order), 256):  # find groups lazily: a big collection needs only a sample
        part = [w for w in order[start : start + 256] if w not in covered]
        if not part:
            continue
        found = image_near_duplicate_groups(coll, part, channel)
        for w in part:
            if w in covered:
                continue
            groups[w] = found[w]
            covered |= found[w]
            picked.append(w)
        if len(picked) >= config.CALIBRATION_MAX_WORKS:
            break
    picked = picked[: config.CALIBRATION_MAX_WORKS]
    if len(picked) < 2:
        return None  # every work is a near-duplicate of every other: nothing unrelated to learn from
    images: dict[str, Image.Image] = {}
    for w in picked:
        data = coll.thumbnail(w)
        if data is not None:
            with Image.open(io.BytesIO(data)) as im:
                images[w] = im.convert("RGB")
    picked = [w for w in picked if w in images]
    if len(picked) < 2:
        return None
    per_work = max(1, math.ceil(queries / len(picked)))
    outputs: list[NullOutput] = []
    for n, w in enumerate(picked):
        for k in range(per_work):
            # each work once as it is (a second copy would be the same row twice), then edits in turn
            edit = IMAGE_EDITS[1 + (k - 1 + n) % (len(IMAGE_EDITS) - 1)] if k else "as is"
            exclude = groups[w]
            if edit == "composite":
                other = picked[(n + 1 + int(rng.integers(0, len(picked) - 1))) % len(picked)]
                out = _composite(images[w], images[other], rng)
                exclude = exclude | groups[other]
            else:
                out = edit_image(images[w], edit, rng)
            outputs.append(NullOutput(out, exclude, edit))
    order_ = rng.permutation(len(outputs))
    return [outputs[i] for i in order_[:queries]]


def edit_image(image: Image.Image, edit: str, rng: np.random.Generator) -> Image.Image:
    """*image* edited as outputs are (one of `IMAGE_EDITS` but "composite")."""
    out = image
    for step in edit.replace("cropped", "crop").replace("mirrored", "mirror").split(" + "):
        if step == "crop":
            out = _crop(out, rng)
        elif step in ("frame", "framed"):
            pad = max(2, round(min(out.size) * rng.uniform(0.05, 0.15)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            out = ImageOps.expand(out, border=pad, fill=colour)
        elif step in ("caption", "captioned"):
            band = max(12, round(out.height * rng.uniform(0.12, 0.2)))
            canvas = Image.new("RGB", (out.width, out.height + band), (255, 255, 255))
            canvas.paste(out, (0, 0))
            ImageDraw.Draw(canvas).text((6, out.height + band // 4), "generated image, unrelated prompt",
                                        fill=(0, 0, 0))
            out = canvas
        elif step in ("blurred", "blur"):
            out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 3.0))))
        elif step == "recoloured":
            hsv = np.asarray(out.convert("HSV")).copy()
            hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.integers(40, 200))) % 256
            out = Image.fromarray(hsv, "HSV").convert("RGB")
        elif step == "mirror":
            out = ImageOps.mirror(out)
        elif step == "rotated":
            out = out.rotate(float(rng.uniform(8, 30)) * (1 if rng.random() < 0.5 else -1), expand=True,
                             resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))
        elif step == "recompressed":
            f = float(rng.uniform(0.6, 0.95))
            out = out.resize((max(8, round(out.width * f)), max(8, round(out.height * f))),
                             Image.Resampling.BILINEAR)
            out = _jpeg(out, int(rng.integers(50, 90)))
        elif step == "recompress":
            out = _jpeg(out, int(rng.integers(25, 60)))
        elif step == "downscale":
            f = float(rng.uniform(0.3, 0.6))
            out = out.resize((max(8, round(out.width * f)), max(8, round(out.height * f))),
                             Image.Resampling.BILINEAR)
        elif step != "as is":
            raise ValueError(f"unknown image edit {step!r}")
    return out


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    """*image* saved as a JPEG of *quality* and read back."""
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return im.convert("RGB")


def _crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    area = rng.uniform(0.40, 0.65)
    aspect = rng.uniform(0.75, 1.33)
    w = max(8, min(image.width, round(image.width * math.sqrt(area * aspect))))
    h = max(8, min(image.height, round(image.height * math.sqrt(area / aspect))))
    x = int(rng.integers(0, image.width - w + 1))
    y = int(rng.integers(0, image.height - h + 1))
    return image.crop((x, y, x + w, y + h))


def _composite(part: Image.Image, base: Image.Image, rng: np.random.Generator) -> Image.Image:
    area = rng.uniform(0.30, 0.60)
    scale = math.sqrt(area * base.width * base.height / (part.width * part.height))
    w = max(8, min(base.width, round(part.width * scale)))
    h = max(8, min(base.height, round(part.height * scale)))
    out = base.copy()
    out.paste(part.resize((w, h), Image.Resampling.BICUBIC),
              (int(rng.integers(0, base.width - w + 1)), int(rng.integers(0, base.height - h + 1))))
    return out


def is_stale(generation_then: int, works_then: int, works_now: int, generation: int) -> bool:
    """Whether a calibration made at another generation should be redone."""
    if generation_then == generation:
        return False
    if works_then < 20:
        return works_now != works_then
    return abs(works_now - works_then) > config.CALIBRATION_STALE_SHARE * works_then
