"""Loading works and AI outputs safely: images, texts, their passages and their metadata.

Everything a user hands to factor4 passes through `read_item` (files or bytes) or `text_item`
(text sent as a string). Bad input never escapes as a raw Pillow or codec exception: it is
refused with an `InputError` whose one-line message names the file, the fault and the fix.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import stat
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import charset_normalizer
import numpy as np
from PIL import Image, ImageOps

from detector import config, safejson
from detector.errors import InputError

logger = logging.getLogger(__name__)

Modality = Literal["image", "text"]

_EXT_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF"}
#: The only Pillow decoders ever tried.
_PIL_FORMATS = tuple(dict.fromkeys(_EXT_FORMATS[e] for e in config.IMAGE_EXTENSIONS))
_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF", b"GIF89a": "GIF"}
_KINDS: dict[str, Modality] = {
    **dict.fromkeys(config.IMAGE_EXTENSIONS, "image"),
    **dict.fromkeys(config.TEXT_EXTENSIONS, "text"),
}
_READS = f"{' '.join(config.IMAGE_EXTENSIONS)} images and {' '.join(config.TEXT_EXTENSIONS)} texts"
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
#: Control characters that do not belong in text: C0 except \t \n \f \r, and DEL.
_CONTROLS = bytes([c for c in range(32) if chr(c) not in "\t\n\f\r"] + [0x7F])
_MAX_CONTROL_SHARE = 0.10
#: Highest charset_normalizer "chaos" (0 = clean text) at which a detected encoding is trusted.
_MAX_CHAOS = 0.20


@dataclass(frozen=True)
class ImageItem:
    """A decoded image: RGB, upright, alpha flattened, first frame only."""

    name: str
    sha256: str
    image: Image.Image = field(compare=False)  # equality and hash go by the bytes' sha256
    format: str
    size_bytes: int
    modality: ClassVar[str] = "image"

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


@dataclass(frozen=True)
class TextItem:
    """A decoded text; offsets into `text` are stable (only a leading BOM is removed)."""

    name: str
    sha256: str
    text: str
    encoding: str
    size_bytes: int
    modality: ClassVar[str] = "text"


Item = ImageItem | TextItem


class _NotText(Exception):
    """Internal: the bytes are not text; args[0] is "binary" or "encoding"."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def read_item(
    path: str | os.PathLike[str] | None = None, *, data: bytes | None = None, name: str | None = None
) -> Item:
    """Read a work or an output from *path*, or from *data* named *name*, as an image or a text.

    What it is comes from `classify` (the extension, then the bytes). Raises `InputError` for
    anything not safely readable or refused.
    """
    if (path is None) == (data is None):
        raise TypeError("read_item takes exactly one of path or data")
    if path is not None:
        label = os.fsdecode(path)
        check_name(label)
        raw = _read_file(Path(label), label)
    else:
        label = name or "<data>"
        raw = bytes(data)  # type: ignore[arg-type]
        _check_size(len(raw), label)
    kind = classify(raw, label)
    return _load_image(raw, label) if kind == "image" else _load_text(raw, label)


def _refused(label: str, what: str) -> InputError:
    return InputError(f"{label}: {what} files are refused (vector and scriptable formats can carry scripts and "
                      f"external references); export it as PNG or JPEG, or its text as .txt; factor4 reads {_READS}")


def check_name(label: str) -> None:
    """Refuse, by its name alone, a file factor4 will not read: a refused format, or an
    extension it does not know. Names without an extension pass (their bytes decide)."""
    ext = Path(label).suffix.lower()
    if ext in config.REFUSED_EXTENSIONS:
        raise _refused(label, ext.lstrip(".").upper())
    if ext and ext not in _KINDS:
        raise InputError(f"{label}: unsupported file type '{ext}'; factor4 reads {_READS}")


def _refused_content(raw: bytes) -> str | None:
    """The refused format the bytes are, by their signature, if any."""
    head = raw[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"%pdf-"):
        return "PDF"
    if head.startswith(b"%!ps") or raw.startswith(b"\xc5\xd0\xd3\xc6"):
        return "PostScript"
    if head.startswith(b"\x1f\x8b"):
        return "compressed (gzip, e.g. SVGZ)"
    if head.startswith(b"<") and (b"<svg" in head or b"<!doctype svg" in head):
        return "SVG"
    if head.startswith((b"<!doctype html", b"<html", b"<script")):
        return "HTML"
    if head.startswith(b"<?xml"):
        return "XML"
    return None


def classify(raw: bytes, label: str) -> Modality:
    """What an input is: "image" or "text", or an InputError saying why it is refused.

    The one decision for every way in (paths, uploads to any route, manifests): the name's
    extension when it has one (refused formats and unknown extensions are refused), and always
    the content, so an SVG, PDF, PostScript or HTML document is refused whatever it is called.
    """
    check_name(label)
    if (what := _refused_content(raw)) is not None:
        raise _refused(label, what)
    kind = _KINDS.get(Path(label).suffix.lower())
    return kind if kind is not None else _sniff(raw, label)


def text_item(text: str, name: str = "<text>") -> TextItem:
    """Wrap text passed directly (e.g. in service JSON); sha256 is of its UTF-8 encoding."""
    if not isinstance(text, str):
        raise InputError(f"{name}: text must be a string, not {type(text).__name__}")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{name}: text holds invalid characters ({exc.reason}); send valid Unicode") from exc
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise InputError(f"{name}: text is empty")
    _check_size(len(raw), name)
    return TextItem(name, hashlib.sha256(raw).hexdigest(), text, "utf-8", len(raw))


def _check_size(size: int, label: str) -> None:
    if size == 0:
        raise InputError(f"{label}: file is empty")
    if size > config.MAX_FILE_BYTES:
        raise InputError(
            f"{label}: file is too large ({size} bytes, limit {config.MAX_FILE_BYTES}); shrink or split it"
        )


def _read_file(path: Path, label: str) -> bytes:
    """Bytes of a regular file, after the existence and size checks."""
    try:
        if not stat.S_ISREG((st := path.stat()).st_mode):
            raise InputError(f"{label}: no such file (not a regular file); give a file's path")
        _check_size(st.st_size, label)
        with path.open("rb") as fh:
            raw = fh.read(config.MAX_FILE_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise InputError(f"{label}: no such file; check the path") from exc
    except OSError as exc:
        raise InputError(f"{label}: cannot read the file ({exc.strerror or exc}); check its permissions") from exc
    _check_size(len(raw), label)  # the file may have changed since stat()
    return raw


def _magic_format(raw: bytes) -> str | None:
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC.items() if raw.startswith(magic)), None)


def _sniff(raw: bytes, label: str) -> Modality:
    """Image if the bytes carry a supported image signature, text if they decode as text."""
    if _magic_format(raw):
        return "image"
    try:
        _decode(raw)
    except _NotText:
        raise InputError(
            f"{label}: unsupported file type (neither a supported image nor text); factor4 reads {_READS}"
        ) from None
    return "text"


# --- images --------------------------------------------------------------------------------


def _load_image(raw: bytes, label: str) -> ImageItem:
    """Check the header's size, decode fully (so truncation is caught), normalise to upright RGB.

    Pillow's own bomb check (its global MAX_IMAGE_PIXELS) is left as it is and also caught.
    """
    fmt = _magic_format(raw) or "image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw), formats=_PIL_FORMATS) as im:
                fmt = "JPEG" if im.format == "MPO" else str(im.format)
                (w, h), limit = im.size, config.MAX_IMAGE_PIXELS
                if w * h > limit:
                    raise InputError(
                        f"{label}: decompression bomb: {w}x{h} = {w * h} pixels exceeds limit {limit}; downscale it"
                    )
                if min(w, h) < config.MIN_IMAGE_SIDE:
                    raise InputError(
                        f"{label}: image is too small ({w}x{h} px; at least {config.MIN_IMAGE_SIDE} px a side)"
                    )
                im.load()
                rgb = _to_rgb(_upright(im, label))
    except InputError:
        raise
    except Image.UnidentifiedImageError as exc:
        raise InputError(
            f"{label}: not a readable image (content is not {'/'.join(_PIL_FORMATS)}); re-export it as PNG or JPEG"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{label}: decompression bomb ({_one_line(exc)}); downscale it") from exc
    except Exception as exc:  # any decoder failure: truncated data, bad chunk, bad palette...
        raise InputError(
            f"{label}: image is truncated or corrupt (cannot decode {fmt} data: {_one_line(exc)}); re-export it"
        ) from exc
    return ImageItem(label, hashlib.sha256(raw).hexdigest(), rgb, fmt, len(raw))


def _upright(im: Image.Image, label: str) -> Image.Image:
    """Apply the EXIF orientation; an unreadable EXIF block is ignored, not fatal."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception as exc:  # noqa: BLE001 - broken EXIF must not refuse a decodable image
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", label, _one_line(exc))
        return im.copy()


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB version of *im*: alpha flattened onto ALPHA_BACKGROUND, 16-bit/float scaled to 8 bit."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 255.0 if im.mode == "F" and arr.size and arr.max() <= 1.0 else 1 / 257
        return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, config.ALPHA_BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im if im.mode == "RGB" else im.convert("RGB")


# --- texts ---------------------------------------------------------------------------------


def _load_text(raw: bytes, label: str) -> TextItem:
    try:
        text, encoding = _decode(raw)
    except _NotText as exc:
        if exc.args[0] == "binary":
            raise InputError(f"{label}: looks like a binary file, not text; give a UTF-8 text file") from None
        raise InputError(
            f"{label}: text is not UTF-8 and its encoding could not be detected; convert it to UTF-8"
        ) from None
    if not text.strip():
        raise InputError(f"{label}: text is empty")
    return TextItem(label, hashlib.sha256(raw).hexdigest(), text, encoding, len(raw))


def _is_binary(data: bytes, chars: int) -> bool:
    """NUL, or control bytes (all ASCII, so counted the same in UTF-8) over 10% of *chars*."""
    controls = len(data) - len(data.translate(None, _CONTROLS))
    return b"\x00" in data or controls > _MAX_CONTROL_SHARE * chars


def _decode(raw: bytes) -> tuple[str, str]:
    """(text, encoding): BOM-marked Unicode, else UTF-8, else a confidently detected charset.

    charset_normalizer ranks single-byte Latin code pages poorly on short texts, so among its
    low-chaos candidates Windows-1252 (a superset of printable Latin-1) is preferred; another
    candidate is taken only if it also looks like a known language (coherence > 0).
    """
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            try:
                text = raw[len(bom) :].decode(codec)
            except UnicodeDecodeError:
                raise _NotText("encoding") from None
            if _is_binary(text.encode("utf-8"), len(text)):
                raise _NotText("binary")
            return text, codec
    if _is_binary(raw, len(raw)):
        raise _NotText("binary")
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    candidates = [
        m
        for m in charset_normalizer.from_bytes(raw)
        if m.chaos <= _MAX_CHAOS and not m.encoding.startswith(("utf_16", "utf_32"))
    ]
    if any("cp1252" in m.could_be_from_charset for m in candidates):
        encoding = "cp1252"
    elif candidates and candidates[0].coherence > 0:
        encoding = candidates[0].encoding
    else:
        raise _NotText("encoding")
    try:
        text = raw.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        raise _NotText("encoding") from None
    logger.info("text is not UTF-8; decoded it as %s", encoding)
    return text.removeprefix("\ufeff"), encoding


# --- passages ------------------------------------------------------------------------------

WORD_RE = re.compile(r"\w+(?:['’]\w+)*")


@dataclass(frozen=True)
class Passage:
    """A window of words; `text` is the source text's `[start:end]` slice."""

    ordinal: int
    start: int
    end: int
    text: str


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans `(start, end)` of the words of *text*, in order."""
    return [m.span() for m in WORD_RE.finditer(text)]


def split_passages(
    text: str, words: int = config.PASSAGE_WORDS, overlap: int = config.PASSAGE_OVERLAP
) -> list[Passage]:
    """Windows of *words* words stepping by words-overlap; the last one ends at the last word."""
    if words < 1 or not 0 <= overlap < words:
        raise ValueError(f"need words >= 1 and 0 <= overlap < words, got {words=}, {overlap=}")
    spans = word_spans(text)
    if not spans:
        return []
    n = len(spans)
    firsts = list(range(0, max(n - words, 0) + 1, words - overlap))
    if firsts[-1] + words < n:
        firsts.append(n - words)
    bounds = [(spans[f][0], spans[min(f + words, n) - 1][1]) for f in firsts]
    return [Passage(i, start, end, text[start:end]) for i, (start, end) in enumerate(bounds)]


# --- metadata sidecars ---------------------------------------------------------------------

_META_KEYS = {k: k for k in ("file", "title", "creator", "licence", "source_url")} | {
    "path": "file",
    "license": "licence",
    "url": "source_url",
}


@dataclass(frozen=True)
class WorkMeta:
    """What is known about a work; `extra` holds the sidecar's other columns (a private copy)."""

    title: str | None = None
    creator: str | None = None
    licence: str | None = None
    source_url: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", dict(self.extra))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (title, creator, licence, source_url, extra), e.g. for JSON reports."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MetadataTable:
    """Metadata per work from a sidecar; `entries` is keyed by the path as written there."""

    source: Path | None = None
    entries: Mapping[str, WorkMeta] = field(default_factory=dict)
    _by_path: dict[Path, WorkMeta] = field(init=False, repr=False, compare=False)
    _by_name: dict[str, list[WorkMeta]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        base = self.source.parent if self.source is not None else Path()
        by_path: dict[Path, WorkMeta] = {}
        by_name: dict[str, list[WorkMeta]] = {}
        for written, meta in self.entries.items():
            rel = Path(written.replace("\\", "/"))
            by_path[(base / rel).resolve()] = meta
            by_name.setdefault(rel.name, []).append(meta)
        object.__setattr__(self, "_by_path", by_path)
        object.__setattr__(self, "_by_name", by_name)

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, path: str | os.PathLike[str]) -> WorkMeta:
        """Metadata of *path*: exact path match, else a unique basename match, else `WorkMeta()`."""
        p = Path(path)
        if (meta := self._by_path.get(p.resolve())) is not None:
            return meta
        found = self._by_name.get(p.name, [])
        if len(found) > 1:
            logger.warning("%s: %d sidecar entries share this file name; none used", p, len(found))
        return found[0] if len(found) == 1 else WorkMeta()


def read_metadata(path: str | os.PathLike[str]) -> MetadataTable:
    """Read a .csv sidecar (header with a `file` or `path` column) or a .json one (a list of
    objects with "file"/"path", or an object mapping file -> fields)."""
    label = os.fsdecode(path)
    ext = Path(label).suffix.lower()
    if ext not in (".csv", ".json"):
        raise InputError(f"{label}: unsupported metadata sidecar type '{ext}'; use .csv or .json")
    try:
        text = _read_file(Path(label), label).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{label}: sidecar is not UTF-8 (bad byte at {exc.start}); save it as UTF-8") from exc
    entries: dict[str, WorkMeta] = {}
    for where, fields in _csv_rows(text, label) if ext == ".csv" else _json_rows(text, label):
        file, meta = _meta_entry(fields, label, where)
        if file in entries:
            raise InputError(f"{label}: {where}: '{file}' is listed twice; keep one entry per work")
        entries[file] = meta
    if not entries:
        logger.warning("%s: metadata sidecar has no entries", label)
    return MetadataTable(Path(label), entries)


_META_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _meta_value(value: object, where: str) -> str | None:
    """One metadata value as stripped text (None when empty): numbers and nested values as
    JSON; longer than META_MAX_CHARS, or holding control characters, is an InputError."""
    if value is not None and not isinstance(value, str):
        nested = isinstance(value, (dict, list, bool))
        value = json.dumps(value, ensure_ascii=False) if nested else str(value)
    text = (value or "").strip()
    if len(text) > config.META_MAX_CHARS:
        raise InputError(f"{where}: {len(text)} characters exceed the limit of META_MAX_CHARS = "
                         f"{config.META_MAX_CHARS}; shorten it")
    if _META_CONTROLS.search(text):
        raise InputError(f"{where}: holds control characters; send plain text")
    return text or None


def meta_fields(fields: Mapping[str, object], where: str) -> dict[str, Any]:
    """Fields of one metadata entry (a sidecar row, an upload's `meta`) as keyword arguments of
    `WorkMeta` plus "file" when given: canonical keys (path -> file, license -> licence, url ->
    source_url) and the rest in "extra", each value checked by the same rules."""
    if not isinstance(fields, Mapping):
        raise InputError(f"{where}: metadata must be an object of title, creator, licence, source_url "
                         "(and other string fields)")
    known: dict[str, str | None] = {}
    extra: dict[str, str] = {}
    for key, value in fields.items():
        key = str(key)
        if len(key) > 200 or _META_CONTROLS.search(key):
            raise InputError(f"{where}: a field name is longer than 200 characters or holds control characters")
        canonical = _META_KEYS.get(key.strip().lower())
        if canonical in known:
            raise InputError(f"{where}: '{key}' repeats the {canonical} field; keep one")
        if canonical:
            known[canonical] = _meta_value(value, f"{where}: {key!r}")
        elif key.strip() and (text := _meta_value(value, f"{where}: {key!r}")) is not None:
            extra[key.strip()] = text
    return {**known, "extra": extra}


def _meta_entry(fields: Mapping[str, object], label: str, where: str) -> tuple[str, WorkMeta]:
    """(file as written, WorkMeta) from one row or object of a sidecar."""
    known = meta_fields(fields, f"{label}: {where}")
    if not (file := known.pop("file", None)):
        raise InputError(f"{label}: {where} has no file (or path) value; add the work's file name")
    return file, WorkMeta(**known)


def _csv_rows(text: str, label: str) -> list[tuple[str, dict[str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = []
    try:
        header = [h.strip() for h in next(reader, [])]
        if not {"file", "path"} & {h.lower() for h in header}:
            raise InputError(f"{label}: CSV header has no 'file' (or 'path') column; add one")
        for row in reader:
            if len(row) > len(header):
                raise InputError(
                    f"{label}: line {reader.line_num} has more cells than the header; quote cells that contain commas"
                )
            if any(cell.strip() for cell in row):
                rows.append((f"line {reader.line_num}", dict(zip(header, row, strict=False))))
    except csv.Error as exc:
        raise InputError(f"{label}: invalid CSV at line {reader.line_num} ({exc}); fix its quoting") from exc
    return rows


def _json_rows(text: str, label: str) -> list[tuple[str, Mapping[str, object]]]:
    doc = safejson.loads(text, label)  # JsonLimitError (an InputError): what is wrong, where
    if isinstance(doc, list) and all(isinstance(obj, dict) for obj in doc):
        return [(f"entry {i}", obj) for i, obj in enumerate(doc, 1)]
    if isinstance(doc, dict) and all(isinstance(obj, dict) for obj in doc.values()):
        return [(f"entry '{file}'", {**obj, "file": file}) for file, obj in doc.items()]
    raise InputError(
        f'{label}: JSON must be a list of objects with a "file" key, or an object '
        "mapping each file name to an object of fields"
    )
