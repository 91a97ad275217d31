"""OpenCLIP image (and text) embeddings: same subject or style, not copies.

Weights are named by an open_clip pretrained tag (``laion2b_s34b_b79k``), which must already be
in the local Hugging Face / open_clip cache because this machine cannot download it, or by
the path of a checkpoint file. Nothing is fetched when the file is already here, and nothing at
all is attempted while ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from detector import config
from detector.encoders.base import Encoder, batches
from detector.errors import EncoderError, ModelUnavailable

logger = logging.getLogger(__name__)

#: Suffixes that mark the pretrained part of a spec as a checkpoint path rather than a tag.
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz")
_TRUE = {"1", "on", "yes", "true"}


def looks_like_path(pretrained: str) -> bool:
    """True if *pretrained* names a file rather than an open_clip tag."""
    return (
        "/" in pretrained
        or "\\" in pretrained
        or pretrained.startswith(("~", "."))
        or pretrained.lower().endswith(CHECKPOINT_SUFFIXES)
        or os.path.isfile(pretrained)
    )


def hub_offline() -> bool:
    """True if the environment forbids Hugging Face downloads (read now, not at import)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - open_clip needs it for tags anyway
        return False
    return bool(constants.HF_HUB_OFFLINE)


def cached_checkpoint(tag_cfg: dict[str, Any], cache_dir: str | None = None) -> Path | None:
    """Where open_clip would find the weights of a pretrained tag already on disk, if anywhere.

    Looks where open_clip's own download functions put files (the Hugging Face hub cache,
    ``~/.cache/clip`` for URLs) without touching the network.
    """
    if tag_cfg.get("file"):
        path = Path(tag_cfg["file"]).expanduser()
        return path if path.is_file() else None
    hf_hub = tag_cfg.get("hf_hub", "")
    if hf_hub:
        from huggingface_hub import try_to_load_from_cache
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo_id, filename = os.path.split(hf_hub)
        filename = filename or HF_WEIGHTS_NAME
        candidates = [filename]
        if filename == HF_WEIGHTS_NAME:
            candidates.insert(0, HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename[:-4] + ".safetensors")
        for candidate in candidates:
            found = try_to_load_from_cache(repo_id, candidate, cache_dir=cache_dir)
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    url = tag_cfg.get("url", "")
    if url:
        path = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if path.is_file():
            return path
    return None


def _download_host(tag_cfg: dict[str, Any]) -> str | None:
    """Host open_clip would download a tag's weights from (it prefers the Hugging Face hub)."""
    if tag_cfg.get("hf_hub"):
        try:
            from huggingface_hub import constants
        except ImportError:
            return None
        return urlparse(constants.ENDPOINT).hostname
    if tag_cfg.get("url"):
        return urlparse(tag_cfg["url"]).hostname
    return None


def _resolves(host: str) -> bool:
    """True if DNS knows *host* (a quick check that a download could start at all)."""
    try:
        socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return True


def _source(tag_cfg: dict[str, Any]) -> str:
    if tag_cfg.get("hf_hub"):
        return f" (Hugging Face repo {tag_cfg['hf_hub'].rstrip('/')})"
    if tag_cfg.get("url"):
        return f" ({tag_cfg['url']})"
    return ""


class ClipEncoder(Encoder):
    """An OpenCLIP model on CPU. :meth:`encode` embeds images; :meth:`encode_text` embeds
    texts into the same space.

    *model_name* is an open_clip architecture (``open_clip.list_models()``); *pretrained* is
    one of its pretrained tags (``open_clip.list_pretrained_tags_by_model(model_name)``) or
    the path of a checkpoint file.
    """

    modality = "image"

    def __init__(self, model_name: str, pretrained: str) -> None:
        super().__init__()
        if not model_name or not pretrained:
            raise EncoderError(
                "a CLIP encoder needs a model and weights: clip:<model>/<tag-or-checkpoint-path>, "
                "e.g. clip:ViT-B-32/laion2b_s34b_b79k"
            )
        import open_clip
        import torch

        self._torch = torch
        self.model_name = model_name
        if model_name not in open_clip.list_models():
            raise EncoderError(
                f"unknown CLIP model {model_name!r}; the names open_clip knows are listed by "
                "python -c 'import open_clip; print(open_clip.list_models())' "
                "(names are case-sensitive, e.g. ViT-B-32)"
            )

        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        if tag_cfg:
            self.pretrained = pretrained.lower().replace("-", "_")
            self.checkpoint: Path | None = None
            model, preprocess = self._load_tag(open_clip, tag_cfg)
        elif looks_like_path(pretrained):
            path = Path(os.path.abspath(os.path.expanduser(pretrained)))
            self.pretrained = str(path)
            if not path.is_file():
                raise ModelUnavailable(
                    f"CLIP checkpoint {str(path)!r} does not exist or is not a file; pass the path "
                    "of an open_clip checkpoint file (open_clip_model.safetensors or "
                    f"open_clip_pytorch_model.bin) in the encoder spec: clip:{model_name}//path/to/"
                    "open_clip_model.safetensors"
                )
            self.checkpoint = path
            model, preprocess = self._create(open_clip, str(path))
        else:
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            raise EncoderError(
                f"{pretrained!r} is neither a pretrained tag of CLIP model {model_name!r} nor an "
                f"existing checkpoint file; its tags are: {', '.join(tags) or '(none)'}; "
                f"or pass a checkpoint path: clip:{model_name}//path/to/open_clip_model.safetensors"
            )

        self.spec = f"clip:{model_name}/{self.pretrained}"
        try:
            self._tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as exc:  # a Hugging Face tokenizer that is not cached here
            raise ModelUnavailable(
                f"the tokenizer of CLIP model {model_name!r} is not on this machine and cannot "
                f"be downloaded here ({exc}); pick a model that uses open_clip's built-in tokenizer"
            ) from exc
        model.eval()
        self._model = model
        self._preprocess = preprocess
        self.dim = self._output_dim(open_clip)
        logger.info("loaded %s from %s", self.spec, self.checkpoint)

    # -- loading --------------------------------------------------------------------------
    def _create(self, open_clip: Any, pretrained: str, **kwargs: Any) -> tuple[Any, Any]:
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model_name, pretrained=pretrained, device="cpu", **kwargs
            )
        except Exception as exc:
            raise EncoderError(
                f"could not load CLIP checkpoint {pretrained!r} into model {self.model_name!r}: "
                f"{exc}; check that the checkpoint was trained for that architecture"
            ) from exc
        return model, preprocess

    def _unavailable(self, tag_cfg: dict[str, Any], why: str) -> ModelUnavailable:
        return ModelUnavailable(
            f"CLIP weights '{self.model_name}/{self.pretrained}' are not on this machine and "
            f"cannot be downloaded here ({why}); download the checkpoint elsewhere"
            f"{_source(tag_cfg)} (open_clip_pytorch_model.bin or .safetensors) and pass its "
            f"path in the encoder spec: clip:{self.model_name}//path/to/open_clip_model.safetensors"
        )

    def _load_tag(self, open_clip: Any, tag_cfg: dict[str, Any]) -> tuple[Any, Any]:
        cached = cached_checkpoint(tag_cfg)
        if cached is not None:
            # Load the cached file directly, with the tag's preprocessing, so that nothing
            # asks the hub whether a newer copy exists.
            self.checkpoint = cached
            model_cfg = open_clip.get_model_config(self.model_name) or {}
            if bool(tag_cfg.get("quick_gelu")) != bool(model_cfg.get("quick_gelu")):
                logger.warning(
                    "CLIP weights %s/%s were trained with quick_gelu=%s but model %s uses "
                    "quick_gelu=%s; use the matching model name (e.g. %s-quickgelu) for faithful vectors",
                    self.model_name, self.pretrained, bool(tag_cfg.get("quick_gelu")),
                    self.model_name, bool(model_cfg.get("quick_gelu")), self.model_name,
                )
            return self._create(
                open_clip,
                str(cached),
                image_mean=tag_cfg.get("mean"),
                image_std=tag_cfg.get("std"),
                image_interpolation=tag_cfg.get("interpolation"),
                image_resize_mode=tag_cfg.get("resize_mode"),
            )
        if hub_offline():
            raise self._unavailable(tag_cfg, "not in the local cache, and HF_HUB_OFFLINE is set")
        host = _download_host(tag_cfg)
        if host and not _resolves(host):
            # Without this, huggingface_hub retries with back-off for about a minute first.
            raise self._unavailable(tag_cfg, f"not in the local cache, and {host} cannot be reached")
        logger.info("CLIP weights %s/%s are not cached; trying to download them",
                    self.model_name, self.pretrained)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model_name, pretrained=self.pretrained, device="cpu"
            )
        except Exception as exc:
            raise self._unavailable(tag_cfg, f"download failed: {exc}") from exc
        self.checkpoint = cached_checkpoint(tag_cfg)
        if self.checkpoint is None:
            raise self._unavailable(tag_cfg, "downloaded, but the file is not where expected")
        return model, preprocess

    def _output_dim(self, open_clip: Any) -> int:
        cfg = open_clip.get_model_config(self.model_name) or {}
        if isinstance(cfg.get("embed_dim"), int):
            return int(cfg["embed_dim"])
        from PIL import Image

        dummy = self._preprocess(Image.new("RGB", (8, 8))).unsqueeze(0)
        with self._torch.inference_mode():
            return int(self._model.encode_image(dummy).shape[-1])

    def weight_files(self) -> list[Path]:
        if self.checkpoint is None:  # pragma: no cover - every constructor path sets it
            raise RuntimeError(f"{self.spec}: the checkpoint file is unknown")
        return [self.checkpoint]

    # -- encoding -------------------------------------------------------------------------
    def _encode_list(
        self, items: list[Any], batch_size: int, show_progress_bar: bool
    ) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.inference_mode():
            for batch in batches(items, batch_size, show_progress_bar, f"encoding with {self.spec}"):
                pixels = torch.stack([self._preprocess(image) for image in batch])
                out.append(self._model.encode_image(pixels, normalize=True).float().numpy())
        return np.concatenate(out, axis=0)

    def _encode_text_list(
        self, items: list[str], batch_size: int, show_progress_bar: bool
    ) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.inference_mode():
            for batch in batches(items, batch_size, show_progress_bar, f"encoding text with {self.spec}"):
                tokens = self._tokenizer(list(batch))
                out.append(self._model.encode_text(tokens, normalize=True).float().numpy())
        return np.concatenate(out, axis=0)

    def encode_text(
        self,
        texts: Any,
        batch_size: int = config.ENCODE_BATCH_SIZE,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Embed texts with the text tower, into the same space as :meth:`encode`'s images:
        a list of str gives float32 (N, dim), one str gives (dim,); rows are unit length."""
        return self._encode_items(
            texts, "text", self._encode_text_list, batch_size, show_progress_bar
        )
