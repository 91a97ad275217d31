"""Exact-ish fingerprints: PDQ perceptual hashes for images, word shingles for text.

Unlike the encoders' vectors these are compared by equality or Hamming distance, and they
catch the plainest copies: an image re-saved, resized or flipped; a text copied word for word.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from detector import config

__all__ = [
    "PDQ_BITS",
    "PDQ_SPEC",
    "SHINGLES_SPEC",
    "WORD_RE",
    "PdqHash",
    "Shingles",
    "downscale",
    "normalise_word",
    "pdq_dihedral",
    "pdq_distance_flip_aware",
    "pdq_hash",
    "text_shingles",
    "winnow",
    "word_keys",
]

# --- PDQ -----------------------------------------------------------------------------------
PDQ_SPEC = "pdq"
#: Length of a PDQ hash in bits.
PDQ_BITS = 256
_PDQ_BYTES = PDQ_BITS // 8
#: Below this quality PDQ's authors say the hash is unreliable (flat or tiny images).
PDQ_MIN_QUALITY = 50


@dataclass(frozen=True)
class PdqHash:
    """A 256-bit PDQ perceptual hash of an image (Meta's PDQ, via the ``pdqhash`` package).

    Two hashes are compared with ``a - b``, their Hamming distance (0..256; like imagehash):
    unrelated images are about 128 apart; Meta treats 31 or less as the same picture. Equality
    and hashing look at the bits only.
    """

    #: The 256 bits packed MSB-first into 32 bytes (``np.packbits`` of PDQ's bit vector).
    bits: bytes
    #: PDQ's own quality score, 0..100: how much detail the image had. Below 50 PDQ's authors
    #: say the hash is unreliable.
    quality: int = field(default=100, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.bits, bytes) or len(self.bits) != _PDQ_BYTES:
            got = f"{len(self.bits)} bytes" if isinstance(self.bits, bytes) else type(self.bits).__name__
            raise ValueError(f"PdqHash.bits must be {_PDQ_BYTES} bytes, got {got}")
        if isinstance(self.quality, bool) or not isinstance(self.quality, int) or not 0 <= self.quality <= 100:
            raise ValueError(f"PdqHash.quality must be an int in 0..100, got {self.quality!r}")

    @classmethod
    def from_bits(cls, bits: Any, quality: int) -> PdqHash:
        """From PDQ's unpacked bit vector (256 zeros and ones, any int dtype)."""
        array = np.asarray(bits)
        if array.shape != (PDQ_BITS,):
            raise ValueError(f"a PDQ bit vector has shape ({PDQ_BITS},), got {array.shape}")
        return cls(np.packbits(array.astype(np.uint8) & 1).tobytes(), int(quality))

    @classmethod
    def from_hex(cls, text: str, quality: int = 100) -> PdqHash:
        """Parse the 64 hex digits that ``str()`` gives. The hex carries no quality: pass the
        stored one if you kept it (default 100, i.e. trusted)."""
        if not isinstance(text, str) or len(text.strip()) != 2 * _PDQ_BYTES:
            raise ValueError(
                f"a PDQ hash is {2 * _PDQ_BYTES} hex digits, got {text!r}"
            )
        try:
            bits = bytes.fromhex(text.strip())
        except ValueError as exc:
            raise ValueError(f"a PDQ hash is {2 * _PDQ_BYTES} hex digits, got {text!r}") from exc
        return cls(bits, quality)

    @property
    def reliable(self) -> bool:
        """True if quality is at least PDQ_MIN_QUALITY."""
        return self.quality >= PDQ_MIN_QUALITY

    def to_array(self) -> np.ndarray:
        """The packed bits as a uint8 array of shape (32,) (a copy, writable)."""
        return np.frombuffer(self.bits, dtype=np.uint8).copy()

    def __sub__(self, other: object) -> int:
        """Hamming distance between the two hashes' bits, 0..256."""
        if not isinstance(other, PdqHash):
            return NotImplemented
        return (int.from_bytes(self.bits, "big") ^ int.from_bytes(other.bits, "big")).bit_count()

    def __str__(self) -> str:
        return self.bits.hex()

    def __repr__(self) -> str:
        return f"PdqHash({self.bits.hex()!r}, quality={self.quality})"


def downscale(image: Any, side: int) -> Any:
    """*image* scaled (bilinear) to fit *side* x *side*, or itself if it already fits. One
    function for every small copy (PDQ input, thumbnails), so a copy made once can serve both."""
    from PIL import Image

    if max(image.size) <= side:
        return image
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def _pdq_pixels(image: Any) -> np.ndarray:
    """A C-contiguous uint8 HxWx3 RGB array, as pdqhash requires."""
    from PIL import Image

    if isinstance(image, Image.Image):
        # PDQ reduces to 64 x 64 anyway; hashing a 4000-pixel photo whole is ~50x slower
        array = np.asarray(downscale(image if image.mode == "RGB" else image.convert("RGB"), config.PDQ_MAX_SIDE))
    elif isinstance(image, np.ndarray):
        array = image
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"PDQ needs an RGB array of shape (H, W, 3), got {array.shape}")
    else:
        raise TypeError(f"PDQ hashes a PIL image, got {type(image).__name__}")
    return np.ascontiguousarray(array, dtype=np.uint8)


def pdq_hash(image: Any) -> PdqHash:
    """The PDQ hash of a PIL image (converted to RGB if need be)."""
    import pdqhash

    bits, quality = pdqhash.compute(_pdq_pixels(image))
    return PdqHash.from_bits(bits, quality)


def pdq_dihedral(image: Any) -> list[PdqHash]:
    """PDQ hashes of the image under the 8 rotations and flips, in pdqhash's order: the
    original (index 0), rotated 90, 180 and 270 degrees, flipped left-right, flipped top-bottom,
    and flipped over each diagonal. Cheaper than rotating and hashing 8 times."""
    import pdqhash

    hashes, quality = pdqhash.compute_dihedral(_pdq_pixels(image))
    # pdqhash 0.2 gives one quality for all eight (they share the image's detail); accept a
    # list too in case a later release gives one each.
    qualities = list(quality) if isinstance(quality, Sequence) else [quality] * len(hashes)
    return [PdqHash.from_bits(bits, q) for bits, q in zip(hashes, qualities, strict=True)]


def pdq_distance_flip_aware(query: Any, reference: PdqHash) -> int:
    """Smallest Hamming distance from *reference* to the query under any rotation or flip.

    *query* is a PIL image, or the list :func:`pdq_dihedral` returned for it (pass that when
    comparing one query with many references).
    """
    if isinstance(query, PdqHash):
        hashes: Sequence[PdqHash] = [query]
    elif isinstance(query, Sequence) and not isinstance(query, (str, bytes)):
        hashes = query
        if not hashes or not all(isinstance(h, PdqHash) for h in hashes):
            raise TypeError("pass a PIL image or a non-empty list of PdqHash (from pdq_dihedral)")
    else:
        hashes = pdq_dihedral(query)
    return min(h - reference for h in hashes)


# --- word shingles -------------------------------------------------------------------------
SHINGLES_SPEC = "shingles"
#: A word: letters, digits or underscores, with inner apostrophes (don't, l’homme).
#: The same rule as detector.works.WORD_RE.
WORD_RE = re.compile(r"\w+(?:['’]\w+)*")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'"})


def normalise_word(word: str) -> str:
    """The form of a word that shingles hash: curly apostrophes made straight, casefolded,
    NFKC-normalised. Words equal under this compare equal."""
    return unicodedata.normalize("NFKC", word.translate(_APOSTROPHES).casefold())


@dataclass(frozen=True, eq=False)
class Shingles:
    """The word n-grams of a text, hashed: finds runs of words copied verbatim.

    Shingle i covers words i..i+n-1. Case, punctuation and spacing between words do not
    change the keys; the words themselves (after :func:`normalise_word`) do.
    """

    #: int64 (M,): key of the shingle starting at word i, M = max(0, n_words - n + 1); a text
    #: of 1..n-1 words has one shingle over all its words. The key is the first 8 bytes of
    #: blake2b(" ".join(normalised words), digest_size=8) read as a big-endian signed int64
    #: (what SQLite stores as INTEGER).
    keys: np.ndarray
    #: int64 (n_words, 2): (start, end) character offsets of each word in the original text,
    #: so ``text[start:end]`` is the word.
    word_spans: np.ndarray
    #: Words per shingle.
    n: int

    @property
    def n_words(self) -> int:
        """Number of words in the text."""
        return int(self.word_spans.shape[0])

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def __repr__(self) -> str:
        return f"Shingles(n={self.n}, n_words={self.n_words}, n_keys={len(self)})"


def _keys(shingles: Iterator[bytes]) -> np.ndarray:
    """int64 keys of byte strings: blake2b-64 digests read as big-endian signed int64."""
    blake2b = hashlib.blake2b
    digests = b"".join(blake2b(data, digest_size=8).digest() for data in shingles)
    return np.frombuffer(digests, dtype=">i8").astype(np.int64)


def _split_words(text: str) -> tuple[list[str], np.ndarray]:
    """The words of *text* as found by WORD_RE, and their (start, end) spans as int64 (n, 2)."""
    matches = list(WORD_RE.finditer(text))
    spans = np.fromiter(
        chain.from_iterable(map(re.Match.span, matches)), dtype=np.int64, count=2 * len(matches)
    ).reshape(-1, 2)
    return [m.group() for m in matches], spans


def text_shingles(text: str, n: int = config.SHINGLE_WORDS) -> Shingles:
    """Word shingles of *text*: n-word runs, hashed to int64 keys (see :class:`Shingles`)."""
    if not isinstance(text, str):
        raise TypeError(f"text_shingles takes a str, got {type(text).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (words per shingle) must be a positive int, got {n!r}")
    raw_words, spans = _split_words(text)
    # Normalise each distinct word once; long texts repeat most of theirs.
    forms: dict[str, bytes] = {}
    words: list[bytes] = []
    for raw in raw_words:
        form = forms.get(raw)
        if form is None:
            form = forms[raw] = normalise_word(raw).encode("utf-8")
        words.append(form)
    join = b" ".join
    if not words:
        keys = np.zeros(0, dtype=np.int64)
    elif len(words) < n:
        keys = _keys(iter([join(words)]))
    else:
        keys = _keys(join(words[i : i + n]) for i in range(len(words) - n + 1))
    keys.setflags(write=False)
    spans.setflags(write=False)
    return Shingles(keys=keys, word_spans=spans, n=n)


def winnow(keys: np.ndarray, window: int = config.SHINGLE_WINNOW) -> np.ndarray:
    """Indices of the shingles that winnowing keeps: in every run of *window* consecutive keys,
    the (rightmost) smallest one. Any run of ``window`` shingles shared by two texts therefore
    shares at least one kept key, so storing only these still finds every verbatim run of
    ``n + window - 1`` words (Schleimer, Wilkerson and Aiken, SIGMOD 2003), with about
    2 / (window + 1) of the keys."""
    keys = np.asarray(keys, dtype=np.int64)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    if window == 1 or len(keys) == 1:
        return np.arange(len(keys), dtype=np.int64)
    w = min(window, len(keys))
    views = np.lib.stride_tricks.sliding_window_view(keys, w)
    rightmost = w - 1 - np.argmin(views[:, ::-1], axis=1)
    return np.unique(rightmost + np.arange(len(views)))


#: Keys of words seen recently (raw word -> key), shared by every word_keys call of the process;
#: emptied when it holds more than config.WORD_KEY_CACHE words. Texts repeat most of their words,
#: so a scan's regions hash few new ones.
_WORD_KEYS: dict[str, int] = {}


def word_keys(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Each word of *text* as an int64 key of its normalised form (equal words, equal keys), and
    the words' (start, end) character spans: what the text aligner compares."""
    raw_words, spans = _split_words(text)
    return _word_key_array(raw_words), spans


def word_keys_only(text: str) -> np.ndarray:
    """`word_keys` without the spans, about twice as fast: for texts most of which will not
    align (the spans of the words, ``word_spans_of(text)``, are the same words in order)."""
    return _word_key_array(WORD_RE.findall(text))


def word_spans_of(text: str) -> np.ndarray:
    """The (start, end) character spans of the words of *text*, as `word_keys` gives them."""
    return _split_words(text)[1]


def _word_key_array(raw_words: list[str]) -> np.ndarray:
    cache = _WORD_KEYS
    keys = list(map(cache.get, raw_words))  # this call's own view: other threads may empty the cache
    if None in keys:
        missing = list(dict.fromkeys(w for w, k in zip(raw_words, keys, strict=True) if k is None))
        fresh = dict(zip(missing, _keys(normalise_word(w).encode("utf-8") for w in missing).tolist(), strict=True))
        keys = [fresh[w] if k is None else k for w, k in zip(raw_words, keys, strict=True)]
        if len(cache) + len(fresh) > config.WORD_KEY_CACHE:
            cache.clear()
        cache.update(fresh)
    return np.array(keys, dtype=np.int64)
