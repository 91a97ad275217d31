"""The word aligner and winnowing, on word-key arrays whose right answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.align import _by_diagonal, _chain, align
from detector.fingerprints import text_shingles, winnow, word_keys, word_keys_only, word_spans_of

rng = np.random.default_rng(0)


def words(n: int, vocab: int = 50_000, start: int = 0) -> np.ndarray:
    """n random word keys from a large vocabulary (unrelated texts rarely share a word)."""
    return rng.integers(start, start + vocab, size=n, dtype=np.int64)


def test_buried_verbatim_excerpt_is_one_verbatim_piece_at_the_right_place() -> None:
    work = words(2000)
    out = np.concatenate([words(300, start=10**6), work[700:760], words(300, start=10**6)])
    found = align(out, work)
    assert len(found) == 1
    al = found[0]
    assert (al.out_start, al.out_end, al.work_start, al.work_end) == (300, 360, 700, 760)
    assert al.matched == al.longest_run == 60
    assert [(p.kind, p.matched) for p in al.pieces] == [("verbatim", 60)]


def test_replaced_words_make_one_near_stretch() -> None:
    work = words(1000)
    out = work[100:220].copy()
    swap = np.arange(2, 120, 3)  # every third word replaced: 1/3 of the words
    out[swap] = words(len(swap), start=10**6)
    (al,) = align(out, work)
    assert (al.out_start, al.work_start) == (0, 100) and al.out_end >= 118
    assert al.matched == 120 - len(swap)
    assert all(p.kind == "near" for p in al.pieces) and al.longest_run == 2


def test_inserted_and_dropped_words_are_bridged_across_diagonals() -> None:
    work = words(500)
    src = work[50:170]
    # drop word 30, insert two new words after word 60, drop word 90: the diagonal moves each time
    out = np.concatenate([src[:30], src[31:60], words(2, start=10**6), src[60:90], src[91:]])
    (al,) = align(out, work)
    assert al.matched == 118 and al.out_start == 0 and al.work_start == 50 and al.work_end == 170
    assert [p.kind for p in al.pieces] == ["verbatim"] * 4


def test_shuffled_sentences_give_one_alignment_each() -> None:
    work = words(600)
    sentences = [work[100:125], work[125:140], work[140:172], work[172:190]]
    out = np.concatenate([sentences[2], sentences[0], sentences[3], sentences[1]])
    found = align(out, work)
    got = sorted((a.work_start, a.work_end) for a in found)
    assert got == [(100, 125), (125, 140), (140, 172), (172, 190)]
    assert sum(a.matched for a in found) == len(out)


def test_unrelated_texts_align_nothing_and_small_stretches_are_dropped() -> None:
    assert align(words(500), words(5000, start=10**6)) == []
    work = words(300)
    out = np.concatenate([words(50, start=10**6), work[10:15], words(50, start=10**6)])
    assert align(out, work) == []  # 5 words < ALIGN_MIN_WORDS
    assert len(align(out, work, min_words=5)) == 1


def test_each_output_word_is_in_at_most_one_alignment() -> None:
    block = words(40)
    work = np.concatenate([block, words(200), block])  # the work holds the passage twice
    (al,) = align(block, work)
    assert al.matched == 40


def test_empty_inputs_and_bad_parameters() -> None:
    assert align(np.zeros(0, np.int64), words(10)) == []
    assert align(words(10), np.zeros(0, np.int64)) == []
    for bad in ({"gap": -1}, {"min_words": 0}, {"verbatim_words": 1.5}, {"gap": True}):
        with pytest.raises(ValueError):
            align(words(10), words(10), **bad)


def test_repetitive_text_is_capped_not_quadratic() -> None:
    same = np.full(5000, 7, dtype=np.int64)  # 25 million equal-word pairs
    found = align(same, same, max_pairs=100_000)
    assert found == [] or all(a.matched <= 5000 for a in found)


def _chain_by_definition(i0, i1, j0, j1, cnt, chain_gap):
    """What `_chain` computes, by its definition: segments in the order they start; each follows
    the best chain among those ending at most chain_gap words before it starts, in both texts;
    of equal ones, the one whose last segment ends first, then started first."""
    n = len(i0)
    order = sorted(range(n), key=lambda s: i0[s])  # stable: equal starts keep their order
    rank = {s: k for k, s in enumerate(order)}
    best, prev = [int(c) for c in cnt], [-1] * n
    for s in order:
        links = [t for t in range(n) if i0[s] - chain_gap <= i1[t] <= i0[s] and j1[t] <= j0[s] <= j1[t] + chain_gap]
        if links:
            top = max(best[t] for t in links)
            arg = min((t for t in links if best[t] == top), key=lambda t: (i1[t], rank[t]))
            best[s] += top
            prev[s] = arg
    return best, prev


@pytest.mark.parametrize("seed", range(40))
def test_segment_chains_are_those_of_the_definition_ties_included(seed: int) -> None:
    r = np.random.default_rng(seed)
    n = int(r.integers(1, 120))
    span = int(r.integers(20, 400))  # small spans: many links, many equal chains
    i0 = r.integers(0, span, n)
    j0 = r.integers(0, span, n)
    length = r.integers(2, 6, n)
    i1, j1 = i0 + length, j0 + length + r.integers(-1, 2, n).clip(min=1 - length)
    cnt = r.integers(2, 4, n)
    gap = int(r.integers(0, 12))
    assert _chain(i0, i1, j0, j1, cnt, gap) == _chain_by_definition(i0, i1, j0, j1, cnt, gap)


@pytest.mark.parametrize(("n_out", "n_work"), [(300, 2_000), (2_000, 64_000), (3_000, 70_000)])
def test_pairs_are_ordered_by_diagonal_then_output_word_in_either_sort(n_out: int, n_work: int) -> None:
    i = np.sort(rng.integers(0, n_out, 5_000))
    j = rng.integers(0, n_work, 5_000)
    d = j - i
    order = _by_diagonal(d, n_out, n_work)  # 16-bit radix sort up to 65,536 words in all
    assert (order == np.lexsort((i, d))).all()


def test_a_copy_deep_in_a_long_work_is_found_past_the_radix_sort_range() -> None:
    work = words(70_000)
    out = np.concatenate([words(500, start=10**6), work[66_000:66_120], words(500, start=2 * 10**6)])
    (found,) = align(out, work)
    assert (found.out_start, found.out_end, found.work_start, found.work_end) == (500, 620, 66_000, 66_120)
    assert found.matched == found.longest_run == 120


def test_word_keys_ignore_case_punctuation_and_apostrophe_style() -> None:
    a, spans = word_keys("Don’t STOP, me -- now!")
    b, _ = word_keys("don't stop me now")
    assert a.tolist() == b.tolist()
    assert [tuple(s) for s in spans.tolist()] == [(0, 5), (6, 10), (12, 14), (18, 21)]


def test_winnow_picks_the_rightmost_minimum_of_each_window() -> None:
    keys = np.array([5, 3, 8, 1, 9, 9, 2, 7, 4])
    assert winnow(keys, 4).tolist() == [3, 6]
    assert winnow(keys, 1).tolist() == list(range(9))
    assert winnow(np.array([4, 2]), 4).tolist() == [1]
    assert winnow(np.zeros(0, np.int64), 4).tolist() == []
    with pytest.raises(ValueError):
        winnow(keys, 0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=0, max_size=80),
    st.lists(st.integers(0, 30), min_size=0, max_size=80),
    st.lists(st.integers(0, 30), min_size=8, max_size=30),
)
def test_winnowing_keeps_a_key_of_every_shared_run_of_eight_words(pre: list, post: list, shared: list) -> None:
    """The guarantee the postings rely on: two texts sharing a run of n + w - 1 = 8 words share a
    kept key, whatever surrounds the run."""
    def text(parts: list[int]) -> str:
        return " ".join(f"w{x}" for x in parts)

    a = text_shingles(text(pre + shared + post))
    b = text_shingles(text(post + shared + pre))
    kept_a = set(a.keys[winnow(a.keys, 4)].tolist())
    kept_b = set(b.keys[winnow(b.keys, 4)].tolist())
    assert kept_a & kept_b


def test_word_keys_are_the_same_whatever_the_word_cache_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    from detector import config, fingerprints

    text = "Thou art more lovely and more temperate; rough winds do shake the darling buds of May."
    fingerprints._WORD_KEYS.clear()
    cold, spans = word_keys(text)
    warm, _ = word_keys(text)  # every word now from the cache
    monkeypatch.setattr(config, "WORD_KEY_CACHE", 3)  # the cache empties itself on almost every call
    tiny = [word_keys(text)[0] for _ in range(3)]
    assert cold.tolist() == warm.tolist() and all(t.tolist() == cold.tolist() for t in tiny)
    assert len(fingerprints._WORD_KEYS) <= len(set(text.split()))
    assert cold[5] == cold[2]  # "more" twice: one key
    assert text[spans[-1][0] : spans[-1][1]] == "May"


def test_regions_aligned_together_keep_their_own_offsets_and_never_join() -> None:
    from detector.textscan import _align_regions

    rng_words = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(20_000)]
    work = " ".join(rng_words.choice(vocab, 3000))
    work_words = work.split()
    # region A ends with words 1000..1199 of the work, region B starts at 1200: a stretch copied
    # across that boundary must come back as two alignments, one per region
    a_start = work.index(" ".join(work_words[900:905]))
    a_end = len(" ".join(work_words[:1200]))
    b_start = a_end + 1
    b_end = len(" ".join(work_words[:1400]))
    filler = " ".join(rng_words.choice([f"x{i}" for i in range(5000)], 100))
    output = f"{filler} {' '.join(work_words[1150:1250])} {filler}"
    out_keys, _ = word_keys(output)
    found = _align_regions(out_keys, [(a_start, work[a_start:a_end]), (b_start, work[b_start:b_end])])
    assert sorted(al.matched for al, _ in found) == [50, 50]
    for al, region in found:
        (piece,) = al.pieces
        got = region.body[region.spans[piece.work_start][0] : region.spans[piece.work_end - 1][1]]
        assert got in (" ".join(work_words[1150:1200]), " ".join(work_words[1200:1250]))
        assert work[region.start + region.spans[piece.work_start][0] :].startswith(got)


@pytest.mark.parametrize("text", [
    "Don’t STOP, me -- now!", "l’homme qui rit, c'est l'homme", "Ünïcödé façade — naïve café", "", "  ... !? ",
    "x" * 3 + " 12,5 % snake_case dash-joined o'neill’s", "ﬁne ＦＵＬＬ width",
])
def test_keys_only_and_spans_are_word_keys_split_in_two(text: str) -> None:
    keys, spans = word_keys(text)
    assert word_keys_only(text).tolist() == keys.tolist()
    assert word_spans_of(text).tolist() == spans.tolist()
