"""PDQ hashes and word shingles (detector.fingerprints)."""

from __future__ import annotations

import hashlib
import io
import random

import numpy as np
import pytest
from PIL import Image, ImageOps

from detector import config
from detector.fingerprints import (
    PDQ_BITS,
    WORD_RE,
    PdqHash,
    normalise_word,
    pdq_dihedral,
    pdq_distance_flip_aware,
    pdq_hash,
    text_shingles,
)


def _jpeg(image: Image.Image, quality: int, scale: float = 1.0) -> Image.Image:
    if scale != 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


# --- PDQ -----------------------------------------------------------------------------------
def test_pdq_hash_shape_and_hex_round_trip(photos):
    h = pdq_hash(photos["astronaut"])
    assert len(h.bits) == PDQ_BITS // 8 == 32
    assert 0 <= h.quality <= 100 and h.reliable
    text = str(h)
    assert len(text) == 64 and int(text, 16) >= 0
    back = PdqHash.from_hex(text)
    assert back == h and back.bits == h.bits and back - h == 0
    assert str(back) == text
    assert PdqHash.from_hex(text.upper()) == h
    arr = h.to_array()
    assert arr.shape == (32,) and arr.dtype == np.uint8 and arr.tobytes() == h.bits
    assert hash(back) == hash(h)


@pytest.mark.parametrize("bad", ["", "zz" * 32, "ab" * 31, "ab" * 33, "0x" + "a" * 62])
def test_pdq_from_hex_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="64 hex digits"):
        PdqHash.from_hex(bad)


def test_pdq_hash_validates_fields():
    with pytest.raises(ValueError, match="32 bytes"):
        PdqHash(b"\x00" * 31, 100)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        PdqHash(b"\x00" * 32, 101)


def test_pdq_subtraction_is_hamming_distance():
    zero = PdqHash(bytes(32), 100)
    ones = PdqHash(b"\xff" * 32, 100)
    one_bit = PdqHash(b"\x80" + bytes(31), 100)
    assert zero - zero == 0
    assert zero - ones == ones - zero == 256
    assert one_bit - zero == 1
    with pytest.raises(TypeError):
        zero - 5


def test_pdq_matches_pdqhash_bits(photos):
    import pdqhash

    small = photos["chelsea"].resize((360, 240))  # within PDQ_MAX_SIDE: hashed as it is
    assert max(small.size) <= config.PDQ_MAX_SIDE
    bits, quality = pdqhash.compute(np.ascontiguousarray(np.asarray(small)))
    h = pdq_hash(small)
    assert h.quality == quality
    assert np.array_equal(np.unpackbits(h.to_array()), bits.astype(np.uint8))


def test_pdq_hashes_big_images_scaled_down(photos):
    import pdqhash

    big = photos["coffee"].resize((1800, 1200))
    assert max(big.size) > config.PDQ_MAX_SIDE
    small = big.resize((config.PDQ_MAX_SIDE, config.PDQ_MAX_SIDE * 2 // 3), Image.Resampling.BILINEAR)
    bits, _ = pdqhash.compute(np.ascontiguousarray(np.asarray(small)))
    assert np.array_equal(np.unpackbits(pdq_hash(big).to_array()), bits.astype(np.uint8))
    assert pdq_hash(big) - pdq_hash(photos["coffee"]) <= 16  # the same picture either way


def test_pdq_jpeg_copy_is_close_and_unrelated_is_far(photos):
    for name, image in photos.items():
        h = pdq_hash(image)
        assert pdq_hash(_jpeg(image, 30)) - h <= 16, name
        assert pdq_hash(_jpeg(image, 50, scale=0.5)) - h <= 31, name
    hashes = [pdq_hash(image) for image in photos.values()]
    for i, a in enumerate(hashes):
        for b in hashes[i + 1 :]:
            assert a - b >= 70


def test_pdq_flip_aware_distance(photos):
    for name, image in photos.items():
        h = pdq_hash(image)
        mirrored = ImageOps.mirror(image)
        assert pdq_hash(mirrored) - h >= 70, name
        # images over PDQ_MAX_SIDE are scaled down before hashing, and scaling a flipped image
        # is not exactly flipping the scaled one: a few bits differ, well under the copy threshold
        assert pdq_distance_flip_aware(mirrored, h) <= 24, name
        assert pdq_distance_flip_aware(image.rotate(90, expand=True), h) <= 24, name
        # The precomputed dihedral list gives the same answer as the image.
        dihedral = pdq_dihedral(mirrored)
        assert pdq_distance_flip_aware(dihedral, h) == pdq_distance_flip_aware(mirrored, h)
    other = pdq_hash(photos["coffee"])
    assert pdq_distance_flip_aware(photos["astronaut"], other) >= 70


def test_pdq_dihedral_index_zero_is_original(photos):
    image = photos["chelsea"]
    dihedral = pdq_dihedral(image)
    assert len(dihedral) == 8
    assert dihedral[0] == pdq_hash(image)
    assert len({str(h) for h in dihedral}) == 8


def test_pdq_converts_modes_and_rejects_non_images(photos):
    rgb = photos["astronaut"]
    assert pdq_hash(rgb.convert("RGBA")) == pdq_hash(rgb)
    assert pdq_hash(rgb.convert("L")) - pdq_hash(rgb) <= 16
    with pytest.raises(TypeError, match="PIL image"):
        pdq_hash("astronaut.png")


# --- shingles ------------------------------------------------------------------------------
def _key(words: str) -> int:
    digest = hashlib.blake2b(words.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def test_shingle_keys_follow_the_documented_formula():
    s = text_shingles("Alpha beta gamma delta epsilon zeta", n=5)
    assert s.n == 5
    assert s.keys.dtype == np.int64 and s.keys.shape == (2,)
    assert s.keys.tolist() == [_key("alpha beta gamma delta epsilon"), _key("beta gamma delta epsilon zeta")]


def test_shingles_ignore_case_punctuation_and_spacing():
    a = text_shingles("The quick brown fox jumps over the lazy dog. It’s late!")
    b = text_shingles("the QUICK, brown fox -- jumps\nover the lazy   dog; it's LATE")
    assert a.keys.tolist() == b.keys.tolist()
    assert len(a) == 11 - config.SHINGLE_WORDS + 1
    c = text_shingles("The quick brown fox jumps over the lazy cat. It’s late!")
    assert a.keys.tolist() != c.keys.tolist()
    assert set(a.keys.tolist()) & set(c.keys.tolist())  # the shared run still matches


def test_shingles_unicode_normalisation():
    assert normalise_word("ＦＵＬＬ") == "full"  # NFKC folds full-width letters
    assert normalise_word("Straße") == "strasse"  # casefold, not lower
    assert normalise_word("l’homme") == "l'homme"
    assert text_shingles("ﬁne Straße l’homme").keys.tolist() == text_shingles("FINE STRASSE l'homme").keys.tolist()


def test_shingles_slide_one_word_at_a_time():
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight"]
    whole = text_shingles(" ".join(words), n=3)
    for i in range(len(words) - 2):
        assert whole.keys[i] == text_shingles(" ".join(words[i : i + 3]), n=3).keys[0]


def test_word_spans_map_back_to_the_text():
    text = "  Hello, world!\n\tDon’t   stop — résumé_2 now.  "
    s = text_shingles(text, n=2)
    assert s.word_spans.dtype == np.int64 and s.word_spans.shape == (6, 2)
    assert [text[a:b] for a, b in s.word_spans.tolist()] == WORD_RE.findall(text)
    assert [text[a:b] for a, b in s.word_spans.tolist()] == ["Hello", "world", "Don’t", "stop", "résumé_2", "now"]
    assert s.n_words == 6 and len(s) == 5


def test_short_texts_give_one_shingle_over_all_words():
    s = text_shingles("Hello, World!", n=5)
    assert s.keys.tolist() == [_key("hello world")]
    assert s.word_spans.shape == (2, 2)
    assert text_shingles("hello world", n=5).keys.tolist() == s.keys.tolist()
    assert text_shingles("hello", n=5).keys.tolist() == [_key("hello")]
    four = text_shingles("a b c d", n=5)
    five = text_shingles("a b c d e", n=5)
    assert len(four) == 1 and len(five) == 1 and four.keys[0] != five.keys[0]


@pytest.mark.parametrize("text", ["", "   ", "... — !?", "\n\n"])
def test_texts_without_words_give_no_shingles(text):
    s = text_shingles(text)
    assert s.keys.shape == (0,) and s.keys.dtype == np.int64
    assert s.word_spans.shape == (0, 2) and s.word_spans.dtype == np.int64
    assert len(s) == 0 and s.n_words == 0


def test_shingles_reject_bad_arguments():
    with pytest.raises(TypeError, match="str"):
        text_shingles(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        text_shingles("a b c", n=0)


def test_shingles_arrays_are_read_only():
    s = text_shingles("one two three four five six")
    with pytest.raises(ValueError):
        s.keys[0] = 1


def test_one_megabyte_text():
    rng = random.Random(1234)
    vocabulary = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(1, 9))) for _ in range(5000)]
    parts, size = [], 0
    while size < 1_000_000:
        word = rng.choice(vocabulary)
        sep = rng.choice([" ", " ", ", ", ".\n", " — "])
        parts.append(word + sep)
        size += len(word) + len(sep)
    text = "".join(parts)
    s = text_shingles(text)
    assert s.n_words == len(parts)
    assert len(s) == s.n_words - config.SHINGLE_WORDS + 1
    assert s.word_spans[-1, 1] <= len(text)
