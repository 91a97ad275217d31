"""Unit tests of the storage layer (`indexes`): collections of FAISS indexes + a SQLite catalog.

Small synthetic vectors only: a float channel (dim 8, inner product), a 256-bit binary channel
(Hamming) and a postings channel. Search results of the flat indexes are exact, so they are
compared with brute force in numpy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

import indexes.collection as collection_mod
from indexes import (
    FORMAT_VERSION,
    ChannelSpec,
    Collection,
    CollectionError,
    CollectionExists,
    CollectionNotFound,
    Factor4Error,
    SegmentRecord,
    StorageError,
    Store,
    WorkRecord,
    check_name,
    write_atomic,
)

FLOAT = ChannelSpec("emb", "test-encoder:v1", "image", "float", 8, "ip", "IDMap2,Flat", weights_sha256="ab" * 32)
BINARY = ChannelSpec("bits", "test-hash", "image", "binary", 256, "hamming", "IDMap2,BFlat")
POSTINGS = ChannelSpec("keys", "test-shingles:5", "text", "postings", 0, "containment", "")
SPECS = (FLOAT, BINARY, POSTINGS)


# --- helpers -------------------------------------------------------------------------------

def _sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def image_work(i: int, nseg: int = 1) -> tuple[WorkRecord, list[SegmentRecord], dict[str, np.ndarray]]:
    """Work *i* of modality image: *nseg* segments with deterministic vectors."""
    sha = _sha(f"image-{i}")
    rng = np.random.default_rng(i)
    emb = rng.standard_normal((nseg, FLOAT.dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    bits = rng.integers(0, 256, (nseg, BINARY.dim // 8), dtype=np.uint8)
    rec = WorkRecord(sha[:16], sha, "image", f"images/{i}.png", title=f"image {i}", extra={"i": i},
                     width=32, height=16)
    segs = [SegmentRecord(rec.id, k, box=(0, 0, 32, 16) if k else None) for k in range(nseg)]
    return rec, segs, {"emb": emb, "bits": bits}


def text_work(i: int, keys: list[int]) -> tuple[WorkRecord, list[SegmentRecord], dict, dict, str]:
    """Work *i* of modality text with posting *keys* at positions 0, 1, 2, ..."""
    sha = _sha(f"text-{i}")
    rec = WorkRecord(sha[:16], sha, "text", f"texts/{i}.txt", title=f"text {i}")
    body = f"text number {i} " * 5
    segs = [SegmentRecord(rec.id, 0, 0, len(body) // 2), SegmentRecord(rec.id, 1, len(body) // 2, len(body))]
    k = np.asarray(keys, dtype=np.int64)
    return rec, segs, {}, {"keys": (k, np.arange(len(k), dtype=np.int64))}, body


def vector_files(coll: Collection) -> list[str]:
    return sorted(p.name for p in (coll.path / "vectors").iterdir())


def read_manifest(coll: Collection) -> dict:
    return json.loads((coll.path / "manifest.json").read_text())


def ntotal(coll: Collection, channel: str) -> int:
    return int(coll._indexes[channel].ntotal)


def state(coll: Collection) -> dict:
    """Everything observable about a collection's content, to compare before/after."""
    return {
        "works": [w.to_dict() for w in coll.works()],
        "segments": coll.db.execute("SELECT count(*) FROM segments").fetchone()[0],
        "postings": coll.db.execute("SELECT count(*) FROM postings").fetchone()[0],
        "texts": coll.db.execute("SELECT count(DISTINCT work_num) FROM text_chunks").fetchone()[0],
        "emb": ntotal(coll, "emb"),
        "bits": ntotal(coll, "bits"),
        "generation": coll.generation,
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "home")


@pytest.fixture
def coll(store: Store):
    c = store.create("refs", SPECS)
    yield c
    c.close()


def fill(coll: Collection, n_images: int = 5, nseg: int = 2, texts: dict[int, list[int]] | None = None) -> None:
    with coll.writer() as w:
        for i in range(n_images):
            assert w.add_work(*image_work(i, nseg))
        for i, keys in (texts or {}).items():
            rec, segs, vecs, post, body = text_work(i, keys)
            assert w.add_work(rec, segs, vecs, post, body)


# --- create / open -------------------------------------------------------------------------

def test_create_open_reopen_persists(store: Store) -> None:
    coll = store.create("refs", SPECS)
    assert coll.name == "refs" and coll.generation == 0 and len(coll) == 0
    assert coll.manifest.channels == SPECS
    assert store.names() == ["refs"] and store.exists("refs")
    fill(coll, n_images=4, nseg=2, texts={10: [1, 2, 3]})
    before = state(coll)
    query = image_work(2, 2)[2]["emb"][:1]
    scores_before, ids_before = coll.search("emb", query, 3)
    coll.close()
    with pytest.raises(CollectionError, match="closed"):
        len(coll)

    again = store.open("refs")
    try:
        assert state(again) == before
        assert again.manifest.channels == SPECS
        rec = image_work(3)[0]
        stored = again.work(rec.id)
        assert stored.added_at and stored.to_dict() == rec.to_dict() | {"added_at": stored.added_at}
        assert again.text(text_work(10, [])[0].id) == text_work(10, [])[4]
        scores, ids = again.search("emb", query, 3)
        np.testing.assert_array_equal(ids, ids_before)
        np.testing.assert_allclose(scores, scores_before)
        assert again.check() == []
    finally:
        again.close()


def test_work_records_round_trip(coll: Collection) -> None:
    rec, segs, vecs = image_work(7, nseg=3)
    with coll.writer() as w:
        assert w.add_work(rec, segs, vecs)
    got = coll.work(rec.id)
    assert got.extra == {"i": 7} and (got.width, got.height) == (32, 16) and got.added_at
    assert coll.work_by_sha256(rec.sha256) == got
    assert coll.work_by_sha256(_sha("nope")) is None
    assert coll.works("image") == [got] and coll.works("text") == []
    ids = coll.search("emb", vecs["emb"], 1)[1][:, 0]
    stored = coll.segments(ids.tolist())
    assert [(s.work_id, s.ordinal, s.box) for s in (stored[i] for i in ids)] == [
        (rec.id, 0, None), (rec.id, 1, (0, 0, 32, 16)), (rec.id, 2, (0, 0, 32, 16))
    ]
    assert coll.segments([-1, 10_000]) == {}
    with pytest.raises(CollectionError, match="no work"):
        coll.work("0000000000000000")


@pytest.mark.parametrize(
    "bad", ["", ".hidden", "a/b", "../up", "has space", "x" * 65, "-dash", "naïve", None, 5]
)
def test_bad_names_are_refused_with_help(store: Store, bad: object) -> None:
    with pytest.raises(CollectionError) as err:
        store.create(bad, SPECS)  # type: ignore[arg-type]
    assert "invalid collection name" in str(err.value)
    assert "letters, digits" in str(err.value)
    with pytest.raises(CollectionError, match="invalid collection name"):
        store.open(bad)  # type: ignore[arg-type]
    assert store.names() == []
    assert not store.root.exists() or not any(store.root.iterdir())


def test_good_names_and_channel_names(store: Store) -> None:
    for name in ["a", "A.b-c_1", "9" * 64]:
        assert check_name(name) == name
        store.create(name, SPECS).close()
    assert store.names() == sorted(["a", "A.b-c_1", "9" * 64])
    with pytest.raises(CollectionError, match="invalid channel name"):
        ChannelSpec("bad name", "e", "image", "float", 8, "ip", "IDMap2,Flat")


def test_channel_spec_validation(store: Store) -> None:
    with pytest.raises(CollectionError, match="kind must be"):
        ChannelSpec("c", "e", "image", "sparse", 8, "ip", "Flat")  # type: ignore[arg-type]
    with pytest.raises(CollectionError, match="dim must be positive"):
        ChannelSpec("c", "e", "image", "float", 0, "ip", "Flat")
    with pytest.raises(CollectionError, match="multiple of 8"):
        ChannelSpec("c", "e", "image", "binary", 12, "hamming", "IDMap2,BFlat")
    assert ChannelSpec.from_dict(FLOAT.to_dict()) == FLOAT
    with pytest.raises(CollectionError, match="at least one channel"):
        store.create("empty", [])
    with pytest.raises(CollectionError, match="channel names repeat"):
        store.create("twice", [FLOAT, FLOAT])
    assert store.names() == []


def test_create_existing_raises_and_keeps_it(store: Store, coll: Collection) -> None:
    fill(coll, n_images=2)
    with pytest.raises(CollectionExists, match="already exists"):
        store.create("refs", [FLOAT])
    with store.open("refs") as again:
        assert len(again) == 2 and again.manifest.channels == SPECS
    assert issubclass(CollectionExists, CollectionError) and issubclass(CollectionError, Factor4Error)


def test_open_missing_names_known_collections(store: Store) -> None:
    with pytest.raises(CollectionNotFound) as err:
        store.open("nope")
    assert "collections here: none" in str(err.value)
    store.create("beta", [FLOAT]).close()
    store.create("alpha", [FLOAT]).close()
    with pytest.raises(CollectionNotFound) as err:
        store.open("nope")
    msg = str(err.value)
    assert "'nope'" in msg and "alpha, beta" in msg and "factor4 create nope" in msg
    with pytest.raises(CollectionNotFound):
        Collection.open(store.root / "nope")


def test_names_ignore_leftovers_of_interrupted_create_and_delete(store: Store, coll: Collection) -> None:
    # a crash in `create` leaves `.<name>.creating.<pid>`, one in `delete` `.<name>.deleting.<pid>`:
    # both hold a catalog, neither is a collection
    for leftover in (".other.creating.123", ".gone.deleting.456"):
        (store.root / leftover).mkdir()
        (store.root / leftover / "catalog.sqlite").write_bytes((coll.path / "catalog.sqlite").read_bytes())
    (store.root / "no-catalog").mkdir()
    assert store.names() == ["refs"]
    with pytest.raises(CollectionNotFound) as err:
        store.open("missing")
    assert "(collections here: refs)" in str(err.value)


# --- adding and searching ------------------------------------------------------------------

def test_add_work_is_idempotent_by_sha256(coll: Collection) -> None:
    rec, segs, vecs = image_work(1, nseg=2)
    with coll.writer() as w:
        assert w.add_work(rec, segs, vecs)
        assert w.has_sha256(rec.sha256) == rec.id
        # same sha256 again in the same session, even with other vectors and another source
        other = WorkRecord(rec.id, rec.sha256, "image", "elsewhere.png")
        assert w.add_work(other, segs, image_work(2, 2)[2]) is False
    before = state(coll)
    files = vector_files(coll)
    manifest = read_manifest(coll)
    with coll.writer() as w:
        assert w.add_work(rec, segs, vecs) is False
    assert state(coll) == before  # generation included: nothing to commit
    assert vector_files(coll) == files and read_manifest(coll) == manifest
    assert coll.work(rec.id).source == "images/1.png"
    assert coll.check() == []


def test_float_search_matches_brute_force(coll: Collection) -> None:
    labels: list[tuple[str, int]] = []
    rows = []
    with coll.writer() as w:
        for i in range(30):
            rec, segs, vecs = image_work(i, nseg=1 + i % 3)
            assert w.add_work(rec, segs, vecs)
            labels += [(rec.id, s.ordinal) for s in segs]
            rows.append(vecs["emb"])
    base = np.concatenate(rows)
    assert ntotal(coll, "emb") == len(base) == len(labels)
    queries = np.random.default_rng(99).standard_normal((6, FLOAT.dim)).astype(np.float32)
    k = 7
    scores, ids = coll.search("emb", queries, k)
    assert scores.shape == ids.shape == (6, k)
    sims = queries @ base.T
    expected = np.argsort(-sims, axis=1)[:, :k]
    np.testing.assert_allclose(scores, np.take_along_axis(sims, expected, 1), rtol=1e-5, atol=1e-5)
    segs = coll.segments(ids.ravel().tolist())
    got = [[(segs[int(i)].work_id, segs[int(i)].ordinal) for i in row] for row in ids]
    assert got == [[labels[j] for j in row] for row in expected]
    # a stored vector finds itself first with cosine 1
    s, i = coll.search("emb", base[5:6], 1)
    assert coll.segments([int(i[0, 0])])[int(i[0, 0])].work_id == labels[5][0]
    assert s[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_search_pads_and_handles_empty(coll: Collection) -> None:
    q = np.ones((2, FLOAT.dim), np.float32)
    scores, ids = coll.search("emb", q, 4)
    assert (ids == -1).all() and scores.shape == (2, 4)
    dist, bids = coll.search("bits", np.zeros((1, 32), np.uint8), 3)
    assert (bids == -1).all() and dist.dtype == np.int32
    fill(coll, n_images=2, nseg=1)
    scores, ids = coll.search("emb", q, 4)
    assert (ids[:, :2] >= 0).all() and (ids[:, 2:] == -1).all()
    assert coll.search("emb", np.empty((0, FLOAT.dim), np.float32), 3)[1].shape == (0, 3)
    with pytest.raises(CollectionError, match="posting keys, not vectors"):
        coll.search("keys", q, 1)
    with pytest.raises(CollectionError, match="no channel 'nope'"):
        coll.search("nope", q, 1)


def test_binary_search_hamming_matches_numpy_popcount(coll: Collection) -> None:
    codes = []
    ids_of: dict[int, int] = {}
    with coll.writer() as w:
        for i in range(40):
            rec, segs, vecs = image_work(i, nseg=1)
            assert w.add_work(rec, segs, vecs)
            codes.append(vecs["bits"][0])
    codes_arr = np.stack(codes)
    work_ids = [image_work(i)[0].id for i in range(40)]
    for seg_id, seg in coll.segments(range(1, 100)).items():
        ids_of[seg_id] = work_ids.index(seg.work_id)
    assert len(ids_of) == 40
    rng = np.random.default_rng(5)
    queries = rng.integers(0, 256, (4, 32), dtype=np.uint8)
    queries[0] = codes_arr[17]  # an exact copy: distance 0
    queries[1] = codes_arr[3] ^ np.eye(32, dtype=np.uint8)[0]  # one bit flipped: distance 1
    k = 6
    dist, ids = coll.search("bits", queries, k)
    true = np.unpackbits(queries[:, None, :] ^ codes_arr[None, :, :], axis=2).sum(axis=2)
    np.testing.assert_array_equal(dist, np.sort(true, axis=1)[:, :k])
    for q in range(len(queries)):  # every returned id really is at the returned distance (ties allowed)
        assert [true[q, ids_of[int(i)]] for i in ids[q]] == dist[q].tolist()
    assert ids_of[int(ids[0, 0])] == 17 and dist[0, 0] == 0
    assert ids_of[int(ids[1, 0])] == 3 and dist[1, 0] == 1


def test_lookup_postings_and_document_frequency(coll: Collection) -> None:
    fill(coll, n_images=0, texts={1: [11, 22, 33, 22], 2: [22, 44]})
    id1, id2 = text_work(1, [])[0].id, text_work(2, [])[0].id
    got = sorted(coll.lookup_postings("keys", np.asarray([22, 33, 99])))
    assert got == sorted([(22, id1, 1), (22, id1, 3), (33, id1, 2), (22, id2, 0)])
    assert coll.lookup_postings("keys", np.asarray([99, 100])) == []
    assert coll.key_document_frequency("keys", np.asarray([11, 22, 44])) == {11: 1, 22: 2, 44: 1}
    many = np.arange(-1000, 3000)  # more keys than one SQL statement takes
    assert len(coll.lookup_postings("keys", many)) == 6
    with pytest.raises(CollectionError, match="no channel"):
        coll.lookup_postings("nope", many)
    assert coll.text(id2) == text_work(2, [])[4]
    assert coll.check() == []


# --- removing ------------------------------------------------------------------------------

def test_remove_work_removes_everything(coll: Collection) -> None:
    fill(coll, n_images=4, nseg=2, texts={1: [5, 6, 7], 2: [6, 8]})
    gone_img, gone_txt = image_work(1)[0].id, text_work(1, [])[0].id
    num = coll.db.execute("SELECT num FROM works WHERE id = ?", (gone_txt,)).fetchone()[0]
    gone_vec = image_work(1, 2)[2]
    gone_seg_ids = coll.search("emb", gone_vec["emb"], 1)[1][:, 0].tolist()
    assert {s.work_id for s in coll.segments(gone_seg_ids).values()} == {gone_img}
    with coll.writer() as w:
        assert w.remove_work(gone_img) and w.remove_work(gone_txt)
        assert w.remove_work(gone_txt) is False
    assert len(coll) == 4 and ntotal(coll, "emb") == ntotal(coll, "bits") == 6
    assert coll.segments(gone_seg_ids) == {}
    for channel, q in (("emb", gone_vec["emb"]), ("bits", gone_vec["bits"])):
        _, ids = coll.search(channel, q, 10)
        assert not set(ids.ravel().tolist()) & set(gone_seg_ids)
    assert gone_img not in {w.id for w in coll.works()}
    with pytest.raises(CollectionError, match="no work"):
        coll.work(gone_txt)
    assert coll.text(gone_txt) is None
    assert [r[1] for r in coll.lookup_postings("keys", np.asarray([5, 6, 7, 8]))] == [text_work(2, [])[0].id] * 2
    for table in ("segments", "text_chunks", "postings"):
        assert coll.db.execute(f"SELECT count(*) FROM {table} WHERE work_num = ?", (num,)).fetchone()[0] == 0
    assert coll.db.execute("SELECT count(*) FROM segments").fetchone()[0] == 3 * 2 + 2
    assert coll.check() == []
    assert read_manifest(coll)["counts"] == {"works": 4, "segments": 8, "vectors.emb": 6, "vectors.bits": 6}
    with coll.writer() as w:
        assert w.remove_work("0123456789abcdef") is False
    with Collection.open(coll.path) as again:
        assert again.check() == [] and len(again) == 4


def test_removed_then_re_added_work_is_searchable(coll: Collection) -> None:
    fill(coll, n_images=3, nseg=1)
    rec, segs, vecs = image_work(2, nseg=1)
    with coll.writer() as w:
        assert w.remove_work(rec.id)
        assert w.add_work(rec, segs, vecs)
    _, ids = coll.search("emb", vecs["emb"], 1)
    assert coll.segments(ids[0].tolist())[int(ids[0, 0])].work_id == rec.id
    assert len(coll) == 3 and coll.check() == []


# --- write sessions ------------------------------------------------------------------------

def test_exception_in_writer_rolls_back(coll: Collection) -> None:
    fill(coll, n_images=3, nseg=2, texts={1: [1, 2]})
    before = state(coll)
    files = vector_files(coll)
    manifest = (coll.path / "manifest.json").read_text()
    with pytest.raises(RuntimeError, match="boom"), coll.writer() as w:
        assert w.add_work(*image_work(50, 2))
        assert w.remove_work(image_work(0)[0].id)
        rec, segs, vecs, post, body = text_work(9, [7, 8])
        assert w.add_work(rec, segs, vecs, post, body)
        raise RuntimeError("boom")
    assert state(coll) == before
    assert vector_files(coll) == files
    assert (coll.path / "manifest.json").read_text() == manifest
    assert coll.check() == []
    with Collection.open(coll.path) as again:
        assert state(again) == before
    fill(coll, n_images=0, texts={3: [9]})  # the collection is writable again
    assert len(coll) == len(before["works"]) + 1


def test_commit_inside_session_keeps_earlier_blocks(coll: Collection) -> None:
    with pytest.raises(KeyboardInterrupt), coll.writer() as w:
        assert w.add_work(*image_work(1))
        w.commit()
        assert coll.generation == 1 and read_manifest(coll)["generation"] == 1
        w.commit()  # nothing new: no new generation
        assert coll.generation == 1
        assert w.add_work(*image_work(2))
        raise KeyboardInterrupt
    assert [w.id for w in coll.works()] == [image_work(1)[0].id]
    assert coll.generation == 1 and ntotal(coll, "emb") == 1 and coll.check() == []


def test_nested_writer_is_refused(coll: Collection) -> None:
    with coll.writer() as w:
        with pytest.raises(CollectionError, match="already has a write session"), coll.writer():
            pass
        assert w.add_work(*image_work(1))
    assert len(coll) == 1


def test_reader_sees_commits_only_after_refresh(store: Store, coll: Collection) -> None:
    fill(coll, n_images=2, nseg=1)
    reader = store.open("refs")
    try:
        assert reader.refresh() is False
        before = state(reader)
        new_rec, new_segs, new_vecs = image_work(10, nseg=1)
        with coll.writer() as w:
            assert w.add_work(new_rec, new_segs, new_vecs)
        assert len(coll) == 3
        # the reader still sees its snapshot, catalog and indexes alike
        assert state(reader) == before and len(reader) == 2
        assert reader.work_by_sha256(new_rec.sha256) is None
        assert reader.manifest.counts["works"] == 2 and reader.check() == []
        _, ids = reader.search("emb", new_vecs["emb"], 1)
        assert reader.segments(ids[0].tolist())[int(ids[0, 0])].work_id != new_rec.id
        assert reader.refresh() is True
        assert state(reader) == state(coll) and reader.generation == coll.generation == 2
        _, ids = reader.search("emb", new_vecs["emb"], 1)
        assert reader.segments(ids[0].tolist())[int(ids[0, 0])].work_id == new_rec.id
        assert reader.refresh() is False and reader.check() == []
    finally:
        reader.close()


def test_reader_snapshot_survives_removal_and_reused_segment_ids(store: Store, coll: Collection) -> None:
    """SQLite reuses the largest rowid after a delete: a reader whose catalog moved ahead of its
    indexes would attribute an old vector to a new, unrelated work."""
    fill(coll, n_images=3, nseg=1)
    old_rec, _, old_vecs = image_work(2, nseg=1)
    with store.open("refs") as reader:
        _, old_ids = reader.search("emb", old_vecs["emb"], 1)
        new_rec, new_segs, new_vecs = image_work(77, nseg=1)
        with coll.writer() as w:
            assert w.remove_work(old_rec.id)
            assert w.add_work(new_rec, new_segs, new_vecs)
        _, new_ids = coll.search("emb", new_vecs["emb"], 1)
        assert new_ids[0, 0] == old_ids[0, 0]  # the segment id was reused
        _, ids = reader.search("emb", old_vecs["emb"], 1)
        assert reader.segments(ids[0].tolist())[int(ids[0, 0])].work_id == old_rec.id
        assert reader.work(old_rec.id).sha256 == old_rec.sha256
        assert reader.check() == []
        assert reader.refresh()
        assert reader.segments(ids[0].tolist())[int(ids[0, 0])].work_id == new_rec.id
        with pytest.raises(CollectionError):
            reader.work(old_rec.id)


def test_manifest_matches_after_each_commit(coll: Collection) -> None:
    m = read_manifest(coll)
    assert m["format_version"] == FORMAT_VERSION == 5 and m["name"] == "refs" and m["generation"] == 0
    assert m["channels"] == [s.to_dict() for s in SPECS]
    emb = m["channels"][0]
    assert (emb["encoder"], emb["dim"], emb["metric"], emb["factory"], emb["weights_sha256"]) == (
        "test-encoder:v1", 8, "ip", "IDMap2,Flat", "ab" * 32
    )
    assert m["counts"] == {"works": 0, "segments": 0, "vectors.emb": 0, "vectors.bits": 0}
    created = m["created_at"]
    steps = [
        lambda w: w.add_work(*image_work(1, 2)),
        lambda w: w.add_work(*text_work(1, [1, 2])),
        lambda w: [w.add_work(*image_work(i, 3)) for i in range(2, 5)],
        lambda w: w.remove_work(image_work(1)[0].id),
    ]
    # (works, segments, vectors per channel, generation of the index files): a text-only commit
    # moves the generation but rewrites no index file
    expected = [(1, 2, 2, 1), (2, 4, 2, 1), (5, 13, 11, 3), (4, 11, 9, 4)]
    for gen, (step, (works, segments, vectors, file_gen)) in enumerate(zip(steps, expected, strict=True), start=1):
        with coll.writer() as w:
            step(w)
        m = read_manifest(coll)
        assert m == coll.manifest.to_dict()
        assert m["generation"] == gen == coll.generation
        assert m["created_at"] == created and m["channels"] == [s.to_dict() for s in SPECS]
        assert m["counts"] == {"works": works, "segments": segments, "vectors.emb": vectors, "vectors.bits": vectors}
        assert vector_files(coll) == [f"bits.{file_gen:06d}.faiss", f"emb.{file_gen:06d}.faiss"]
    assert not [p for p in coll.path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("damage", ["generation", "deleted", "garbage"])
def test_stale_manifest_is_repaired_on_open(coll: Collection, damage: str) -> None:
    fill(coll, n_images=3, nseg=2)
    good = read_manifest(coll)
    path = coll.path / "manifest.json"
    coll.close()
    if damage == "generation":
        path.write_text(json.dumps(good | {"generation": 0, "counts": {"works": 0}}))
    elif damage == "deleted":
        path.unlink()
    else:
        path.write_text("{not json")
    with Collection.open(coll.path) as again:
        assert again.generation == 1
        assert read_manifest(again) == good == again.manifest.to_dict()


def test_other_format_version_is_refused(coll: Collection) -> None:
    fill(coll, n_images=1)
    coll.close()
    with sqlite3.connect(coll.path / "catalog.sqlite") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION + 1),))
    db.close()
    with pytest.raises(StorageError) as err:
        Collection.open(coll.path)
    msg = str(err.value)
    assert f"format version {FORMAT_VERSION + 1}" in msg and f"reads version {FORMAT_VERSION}" in msg and "'refs'" in msg


def test_missing_or_damaged_index_file_is_a_storage_error(store: Store, coll: Collection) -> None:
    fill(coll, n_images=2)
    emb_file = coll.path / "vectors" / "emb.000001.faiss"
    assert emb_file.is_file()
    coll.close()
    emb_file.rename(emb_file.with_name("elsewhere"))
    with pytest.raises(StorageError, match=r"damaged: .*emb\.000001\.faiss is missing"):
        store.open("refs")
    emb_file.write_bytes(b"not an index")
    with pytest.raises(StorageError, match="unreadable"):
        store.open("refs")
    (coll.path / "catalog.sqlite").write_bytes(b"not a database at all" * 100)
    for suffix in ("-wal", "-shm"):
        (coll.path / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(StorageError):
        store.open("refs")


@pytest.mark.parametrize(
    "vectors, needs",
    [
        ({"emb": np.zeros((2, 7), np.float32), "bits": np.zeros((2, 32), np.uint8)}, r"emb needs vectors of shape \(2, 8\), got \(2, 7\)"),
        ({"emb": np.zeros((1, 8), np.float32), "bits": np.zeros((2, 32), np.uint8)}, r"emb needs .*\(2, 8\), got \(1, 8\)"),
        ({"bits": np.zeros((2, 32), np.uint8)}, r"emb needs .* got None"),
        ({"emb": np.zeros((2, 8), np.float32), "bits": np.zeros((2, 256), np.uint8)}, r"bits needs .*\(2, 32\)"),
    ],
)
def test_wrong_vector_shape_stores_nothing(coll: Collection, vectors: dict, needs: str) -> None:
    fill(coll, n_images=1)
    before = state(coll)
    rec, segs, _ = image_work(5, nseg=2)
    with coll.writer() as w:
        with pytest.raises(CollectionError, match=needs):
            w.add_work(rec, segs, vectors)
        assert w.has_sha256(rec.sha256) is None
    assert state(coll) == before
    assert coll.check() == []


def test_invalid_works_are_refused(coll: Collection) -> None:
    rec, _, vecs = image_work(1)
    audio = WorkRecord(rec.id, rec.sha256, "audio", "a.wav")
    with coll.writer() as w:
        with pytest.raises(CollectionError, match="no segments"):
            w.add_work(rec, [], vecs)
        with pytest.raises(CollectionError, match="no channel for audio works"):
            w.add_work(audio, [SegmentRecord(rec.id, 0)], {})
    assert len(coll) == 0 and coll.generation == 0


def test_failure_part_way_through_add_work_leaves_nothing(coll: Collection) -> None:
    """Errors that surface after some rows or vectors are in (a repeated ordinal, posting arrays
    of different lengths, vectors that cannot be converted) undo the whole work."""
    good, good_segs, good_vecs = image_work(1, nseg=2)
    rec, segs, vecs = image_work(2, nseg=2)
    text, tsegs, tvecs, tpost, body = text_work(3, [1, 2, 3])
    bad_bits = np.full((2, 32), "x", dtype=object)  # right shape; fails after "emb" got its vectors
    with coll.writer() as w:
        with pytest.raises(sqlite3.IntegrityError):
            w.add_work(rec, [segs[0], segs[0]], vecs)
        with pytest.raises(CollectionError, match="differ in shape"):
            w.add_work(text, tsegs, tvecs, {"keys": (tpost["keys"][0], np.arange(2))}, body)
        with pytest.raises((ValueError, TypeError)):
            w.add_work(rec, segs, {"emb": vecs["emb"], "bits": bad_bits})
        assert w.has_sha256(rec.sha256) is None and w.has_sha256(text.sha256) is None
        assert w.add_work(good, good_segs, good_vecs)
    assert [x.id for x in coll.works()] == [good.id]
    assert ntotal(coll, "emb") == ntotal(coll, "bits") == 2
    assert coll.db.execute("SELECT count(*) FROM postings").fetchone()[0] == 0
    assert coll.check() == []
    assert read_manifest(coll)["counts"]["works"] == 1


def test_failed_commit_rolls_back_and_strays_are_removed(coll: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit that dies after writing its index files but before the catalog transaction is an
    unfinished commit: the previous state stays, and the next writer deletes the new files."""
    fill(coll, n_images=2)
    before = state(coll)
    good_files = vector_files(coll)

    def fail(path: Path) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(collection_mod, "_fsync_dir", fail)
    with pytest.raises(OSError, match="disk gone"), coll.writer() as w:
        assert w.add_work(*image_work(9))
    monkeypatch.undo()
    strays = sorted(set(vector_files(coll)) - set(good_files))
    assert strays == ["bits.000002.faiss", "emb.000002.faiss"]
    assert state(coll) == before and coll.check() == []
    with Collection.open(coll.path) as other:
        assert state(other) == before
    with coll.writer() as w:  # no transaction was left open: a new session starts
        assert vector_files(coll) == good_files
        assert w.add_work(*image_work(9))
    assert len(coll) == 3 and coll.generation == 2 and coll.check() == []
    assert vector_files(coll) == ["bits.000002.faiss", "emb.000002.faiss"]


def test_stray_files_are_removed_when_a_writer_opens(store: Store, coll: Collection) -> None:
    fill(coll, n_images=2)
    current = vector_files(coll)
    vectors = coll.path / "vectors"
    strays = ["emb.000002.faiss", "bits.000002.faiss.tmp", "emb.000077.faiss"]
    for name in strays:
        (vectors / name).write_bytes(b"half written")
    # a manifest half written by a process that was killed, and one a live process is writing
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_tmp = coll.path / f"manifest.json.{int(gone.stdout)}.1.tmp"
    live_tmp = coll.path / f"manifest.json.{os.getpid()}.1.tmp"
    dead_tmp.write_text("{")
    live_tmp.write_text("{")
    coll.close()
    with store.open("refs") as reader:  # readers leave them alone
        assert set(strays) <= set(vector_files(reader))
    with store.open("refs") as again:
        with again.writer():
            pass
        assert vector_files(again) == current
        assert not dead_tmp.exists() and live_tmp.exists()
        assert again.check() == [] and len(again) == 2
        fill_more = image_work(3)
        with again.writer() as w:
            assert w.add_work(*fill_more)
        assert vector_files(again) == ["bits.000002.faiss", "emb.000002.faiss"]


def test_store_delete(store: Store, coll: Collection) -> None:
    fill(coll, n_images=2)
    store.create("keep", [FLOAT]).close()
    coll.close()
    store.delete("refs")
    assert store.names() == ["keep"] and not (store.root / "refs").exists()
    assert [p.name for p in store.root.iterdir()] == ["keep"]  # no trash folder left
    with pytest.raises(CollectionNotFound):
        store.open("refs")
    with pytest.raises(CollectionNotFound):
        store.delete("refs")
    with pytest.raises(CollectionError, match="invalid collection name"):
        store.delete("../keep")
    with store.create("refs", [POSTINGS]) as fresh:  # the name is free again
        assert len(fresh) == 0 and fresh.manifest.channels == (POSTINGS,)
    with store.open("keep") as keep:
        assert keep.check() == []


def test_write_atomic_concurrent_writers(tmp_path: Path) -> None:
    """Two writers of one file (a reader repairing manifest.json while a writer commits) must not
    collide on a shared temporary file."""
    target = tmp_path / "manifest.json"
    payloads = [f"payload {i}\n".encode() * 2000 for i in range(4)]
    errors: list[BaseException] = []

    def work(data: bytes) -> None:
        try:
            for _ in range(150):
                write_atomic(target, data)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_bytes() in payloads
    assert os.listdir(tmp_path) == ["manifest.json"]


# --- delta indexes -------------------------------------------------------------------------

def _brute(coll: Collection, query: np.ndarray, k: int) -> tuple[list[int], np.ndarray]:
    """Exact inner-product top k over every stored float vector, from the catalog's segment ids."""
    ids = [r[0] for r in coll.db.execute("SELECT id FROM segments ORDER BY id")]
    vecs = coll.vectors("emb", ids)
    scores = vecs @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [ids[i] for i in order], scores[order]


def test_small_additions_go_to_a_delta_file_and_are_merged_later(store: Store) -> None:
    coll = store.create("refs", SPECS)
    fill(coll, n_images=100, nseg=2)  # 200 vectors: a 5 % delta holds up to 10
    main_files = dict(coll._files)
    assert coll._deltas == {}  # the first commit had no main vectors: merged at once
    with coll.writer() as w:
        for i in range(100, 103):  # 6 vectors: stay in the delta
            assert w.add_work(*image_work(i, 2))
    assert coll._files == main_files, "a small addition must not rewrite the main index"
    assert sorted(coll._deltas) == ["bits", "emb"]
    assert sorted(p.name for p in (coll.path / "vectors").iterdir()) == sorted(
        [*main_files.values(), *coll._deltas.values()])
    assert coll.manifest.counts["vectors.emb"] == 206 and coll.check() == []
    for i in (5, 101):  # one work in the main index, one in the delta: both found, merged by score
        query = image_work(i, 2)[2]["emb"][0]
        scores, ids = coll.search("emb", query[None, :], 10)
        want_ids, want_scores = _brute(coll, query, 10)
        assert ids[0].tolist() == want_ids
        np.testing.assert_allclose(scores[0], want_scores, rtol=1e-5)
        bits = image_work(i, 2)[2]["bits"][:1]
        dist, hit = coll.search("bits", bits, 3)
        assert dist[0, 0] == 0 and coll.segments([int(hit[0, 0])])[int(hit[0, 0])].work_id == image_work(i)[0].id
    # another process (here: another object) reads the delta from disk
    again = Collection.open(coll.path)
    assert again.search("emb", image_work(101, 2)[2]["emb"][:1], 10)[1].tolist() == \
        coll.search("emb", image_work(101, 2)[2]["emb"][:1], 10)[1].tolist()
    assert again.manifest.counts == coll.manifest.counts and again.check() == []
    again.close()
    # removing works from either tier
    with coll.writer() as w:
        assert w.remove_work(image_work(101)[0].id) and w.remove_work(image_work(7)[0].id)
    assert coll.manifest.counts["vectors.emb"] == 202 and coll.check() == []
    assert image_work(101)[0].id not in {
        s.work_id for s in coll.segments(coll.search("emb", image_work(101, 2)[2]["emb"][:1], 5)[1][0].tolist()).values()}
    # merged on request (the delta holds works 100 and 102 now)
    with coll.writer() as w:
        assert w.merge_deltas() == 4 + 4  # two works of two segments, in both channels
    assert coll._deltas == {} and coll._files != main_files and coll.check() == []
    main_files = dict(coll._files)
    with coll.writer() as w:
        assert w.add_work(*image_work(102 + 1000, 2))  # a fresh delta again
    assert sorted(coll._deltas) == ["bits", "emb"] and coll._files == main_files
    # past 5 % of the main index the delta is merged: one new main file, no delta
    with coll.writer() as w:
        for i in range(103, 110):
            assert w.add_work(*image_work(i, 2))
    assert coll._deltas == {} and coll._files != main_files
    assert sorted(p.name for p in (coll.path / "vectors").iterdir()) == sorted(coll._files.values())
    assert coll.manifest.counts["vectors.emb"] == 218 and coll.check() == []
    query = image_work(105, 2)[2]["emb"][1]
    assert coll.search("emb", query[None, :], 10)[1][0].tolist() == _brute(coll, query, 10)[0]
    coll.close()


def test_a_merge_changes_a_copy_of_the_graph_index_not_what_readers_hold(store: Store) -> None:
    hnsw = dataclasses.replace(FLOAT, factory="IDMap2,HNSW16,Flat")
    coll = store.create("refs", (hnsw, BINARY))
    fill(coll, n_images=100, nseg=2)
    with coll.writer() as w:
        for i in range(100, 103):
            assert w.add_work(*image_work(i, 2))
    held = coll._indexes["emb"].main  # what a reader searching right now holds
    held_ids = faiss.vector_to_array(held.id_map).copy()
    with coll.writer() as w:
        assert w.merge_deltas() == 6 + 6
        w.commit()
        merged = coll._indexes["emb"].main
        assert merged is not held and coll._deltas == {}
    assert held.ntotal == 200 and faiss.vector_to_array(held.id_map).tolist() == held_ids.tolist()
    assert merged.ntotal == 206 and coll.check() == []
    assert faiss.downcast_index(merged.index).hnsw.efSearch == collection_mod.HNSW_EF_SEARCH
    hit = int(coll.search("emb", image_work(101, 2)[2]["emb"][:1], 1)[1][0, 0])
    assert coll.segments([hit])[hit].work_id == image_work(101)[0].id
    coll.close()


def test_a_failed_add_leaves_no_vector_in_the_delta(store: Store) -> None:
    coll = store.create("refs", SPECS)
    fill(coll, n_images=100, nseg=2)
    with coll.writer() as w:
        assert w.add_work(*image_work(201, 2))
        # the text cannot be stored: this fails after the work's vectors went into the delta
        with pytest.raises(sqlite3.Error):
            w.add_work(*image_work(200, 2), text=["not", "a", "str"])  # type: ignore[arg-type]
        assert w._own["emb"].delta.ntotal == 2  # only work 201's
    assert coll.manifest.counts["vectors.emb"] == 202 == coll.manifest.counts["segments"]
    assert coll.check() == [] and sorted(coll._deltas) == ["bits", "emb"]
    coll.close()


def test_a_version_3_collection_is_read_and_upgraded(store: Store) -> None:
    coll = store.create("refs", SPECS)
    fill(coll, n_images=3)
    coll.close()
    with sqlite3.connect(coll.path / "catalog.sqlite") as db:  # what factor4 before deltas wrote
        _whole_texts(db)
        db.execute("UPDATE meta SET value = '3' WHERE key = 'format_version'")
        db.execute("DELETE FROM meta WHERE key = 'deltas'")
    db.close()
    old = Collection.open(coll.path)
    assert old.manifest.format_version == 3 and old.manifest.counts["vectors.emb"] == 6
    with old.writer() as w:
        assert w.add_work(*image_work(3, 2))
    assert old.manifest.format_version == FORMAT_VERSION == 5 and old.check() == []
    old.close()
    assert Collection.open(coll.path).manifest.format_version == 5


def _whole_texts(db: sqlite3.Connection) -> None:
    """Turn a collection's chunked texts back into the whole bodies of format versions 3 and 4."""
    db.execute("CREATE TABLE texts(work_num INTEGER PRIMARY KEY REFERENCES works(num) ON DELETE CASCADE, "
               "body TEXT NOT NULL)")
    db.execute("INSERT INTO texts SELECT work_num, group_concat(body, '') FROM "
               "(SELECT work_num, body FROM text_chunks ORDER BY work_num, chunk) GROUP BY work_num")
    db.execute("DROP TABLE text_chunks")


def _long_text(chars: int) -> str:
    words = ["naïve", "café", "word", "Œuvre", "x", "東京", "plain", "text"]
    out, k = [], 0
    while sum(map(len, out)) + len(out) < chars:
        out.append(words[k % len(words)] + str(k))
        k += 1
    return " ".join(out)[:chars]


def test_texts_are_stored_in_chunks_and_any_stretch_reads_back_exactly(coll: Collection) -> None:
    from indexes.collection import TEXT_CHUNK_CHARS as C

    bodies = {1: _long_text(3 * C + 17), 2: _long_text(2 * C), 3: "", 4: "one", 5: "nul\x00" * C}
    ids = {}
    with coll.writer() as w:
        for i, body in bodies.items():
            rec, segs, vecs, post, _ = text_work(i, [i])
            ids[i] = rec.id
            assert w.add_work(rec, segs, vecs, post, body)
    chunks = dict(coll.db.execute("SELECT works.id, count(*) FROM text_chunks JOIN works ON num = work_num "
                                  "GROUP BY works.id").fetchall())
    assert [chunks[ids[i]] for i in bodies] == [4, 2, 1, 1, 4]  # the empty text keeps one (empty) chunk
    for i, body in bodies.items():
        assert coll.text(ids[i]) == body and coll.text_length(ids[i]) == len(body)
        for a, b in [(0, 0), (0, 5), (C - 3, C + 3), (C, 2 * C), (5, 3 * C + 9), (2 * C - 1, 2 * C),
                     (max(0, len(body) - 2), len(body) + 50), (len(body) + 10, len(body) + 20), (0, 10**9)]:
            assert coll.text_slice(ids[i], a, b) == body[a:b], (i, a, b)
    with pytest.raises(CollectionError, match="no text for work"):
        coll.text_slice(image_work(0, 1)[0].id, 0, 10)
    with pytest.raises(CollectionError, match="bad text slice"):
        coll.text_slice(ids[1], 5, 2)


def test_a_version_4_collection_with_whole_texts_is_read_and_chunked_by_its_next_change(store: Store) -> None:
    coll = store.create("refs", SPECS)
    fill(coll, n_images=1, texts={1: [1, 2], 2: [3]})
    long = _long_text(10_000)
    with coll.writer() as w:
        rec, segs, vecs, post, _ = text_work(3, [4])
        assert w.add_work(rec, segs, vecs, post, long)
    bodies = {text_work(i, [])[0].id: b for i, b in ((1, text_work(1, [])[4]), (2, text_work(2, [])[4]), (3, long))}
    coll.close()
    with sqlite3.connect(coll.path / "catalog.sqlite") as db:
        _whole_texts(db)
        db.execute("UPDATE meta SET value = '4' WHERE key = 'format_version'")
    db.close()
    old = Collection.open(coll.path)
    assert old.manifest.format_version == 4
    for wid, body in bodies.items():  # read from the old layout
        assert old.text(wid) == body and old.text_length(wid) == len(body)
        assert old.text_slice(wid, 3, 9000) == body[3:9000]
    with pytest.raises(RuntimeError, match="stop"), old.writer() as w:  # a change rolled back: still version 4
        assert w.add_work(*text_work(4, [5])[:4], "new text")
        raise RuntimeError("stop")
    assert old.manifest.format_version == 4 and old.text(text_work(4, [])[0].id) is None
    assert old.text_slice(text_work(3, [])[0].id, 4000, 4010) == long[4000:4010]
    with old.writer() as w:  # a change that lands moves every text into chunks, the new one too
        assert w.add_work(*text_work(4, [5])[:4], "new text")
    bodies[text_work(4, [])[0].id] = "new text"
    for again in (old, Collection.open(coll.path)):
        assert again.manifest.format_version == FORMAT_VERSION == 5 and again.check() == []
        tables = {r[0] for r in again.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "texts" not in tables and "text_chunks" in tables
        for wid, body in bodies.items():
            assert again.text(wid) == body and again.text_length(wid) == len(body)
            assert again.text_slice(wid, 3990, 8010) == body[3990:8010]
    old.close()


def test_a_missing_or_garbled_delta_is_a_clear_storage_error(store: Store) -> None:
    coll = store.create("refs", SPECS)
    fill(coll, n_images=100, nseg=2)
    with coll.writer() as w:
        assert w.add_work(*image_work(100, 2))
    delta_file = coll.path / "vectors" / coll._deltas["emb"]
    coll.close()
    catalog = coll.path / "catalog.sqlite"
    with sqlite3.connect(catalog) as db:
        good = db.execute("SELECT value FROM meta WHERE key = 'deltas'").fetchone()[0]
        db.execute("UPDATE meta SET value = '{not json' WHERE key = 'deltas'")
    db.close()
    with pytest.raises(StorageError, match="'refs' is damaged: its catalog's meta table cannot be read"):
        Collection.open(coll.path)
    with sqlite3.connect(catalog) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'deltas'", (good,))
    db.close()
    delta_file.rename(delta_file.with_name("elsewhere"))
    with pytest.raises(StorageError, match=f"damaged: .*{delta_file.name} is missing"):
        Collection.open(coll.path)
