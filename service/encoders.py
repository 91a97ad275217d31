"""The encoders a tenant may name: the built-in ones, and those the operator registers.

Tenants choose encoders by name only. A name that is not offered (a CLIP spec, a checkpoint
path, a URL, a typo) is refused with the same 422 whatever it names: the service never looks
at a tenant's string on disk, so no answer can tell whether a file exists, and no request
makes the server load a model it was not told about.

The operator registers more (OpenCLIP checkpoints on this machine) at start-up, by name:

- ``FACTOR4_ENCODERS``: JSON, ``{"clip-b32": "clip:ViT-B-32//srv/models/b32.safetensors"}``;
- ``FACTOR4_ENCODERS_FILE``: a TOML file with an ``[encoders]`` table of the same.

Each registered spec is checked when the service starts (its checkpoint must exist); a bad one
stops the start with a message naming it. A registered model is loaded once, on first use, and
shared by every request after.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from detector import config
from detector.encoders import ENCODER_SPECS, FINGERPRINTS, parse_spec
from detector.errors import EncoderError
from service.errors import ServiceError
from service.settings import Settings

__all__ = ["BUILT_IN", "EncoderCatalog", "Offered"]

#: Names a registered encoder may take.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")


@dataclass(frozen=True)
class Offered:
    """One encoder a tenant may name."""

    name: str
    spec: str
    modality: Literal["image", "text"]
    kind: Literal["encoder", "fingerprint"]
    description: str


BUILT_IN: tuple[Offered, ...] = (
    Offered("sscd", "sscd", "image", "encoder", ENCODER_SPECS["sscd"]),
    Offered("sscd_distilled", "sscd_distilled", "image", "encoder", ENCODER_SPECS["sscd_distilled"]),
    Offered("minilm", "minilm", "text", "encoder", ENCODER_SPECS["minilm"]),
    Offered("minilm:int8", "minilm:int8", "text", "encoder", ENCODER_SPECS["minilm:int8"]),
    Offered("pdq", "pdq", "image", "fingerprint", "PDQ perceptual hash, flip-aware"),
    Offered("shingles", "shingles", "text", "fingerprint", f"{config.SHINGLE_WORDS}-word shingles (exact text)"),
)


def _registered(name: str, spec: object, where: str) -> Offered:
    """Check one operator-registered encoder; ValueError naming it and what is wrong."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{where}: encoder name {name!r} must be 1-64 lower-case letters, digits, '_', '.', ':' "
                         "or '-'")
    if not isinstance(spec, str):
        raise ValueError(f"{where}: encoder {name!r} must map to a spec string, got {type(spec).__name__}")
    try:
        canonical = parse_spec(spec)
    except EncoderError as exc:
        raise ValueError(f"{where}: encoder {name!r}: {exc}") from None
    if canonical.startswith("clip:"):
        pretrained = canonical.split("/", 1)[1]
        if os.path.isabs(pretrained) and not os.path.isfile(pretrained):
            raise ValueError(f"{where}: encoder {name!r}: checkpoint {pretrained} does not exist; put the "
                             "open_clip weights there or fix the path")
        return Offered(name, canonical, "image", "encoder", f"OpenCLIP {canonical.split('/', 1)[0][5:]} "
                       "(registered by the operator)")
    modality: Literal["image", "text"] = "text" if canonical.startswith("minilm") else "image"
    return Offered(name, canonical, modality, "encoder", f"{canonical} (registered by the operator)")


class EncoderCatalog:
    """The built-in encoders plus the operator's registered ones, by name."""

    def __init__(self, registered: Mapping[str, str] | None = None, where: str = "FACTOR4_ENCODERS") -> None:
        self._by_name: dict[str, Offered] = {o.name: o for o in BUILT_IN}
        for name, spec in (registered or {}).items():
            if name in self._by_name:
                raise ValueError(f"{where}: encoder {name!r} is already defined (built in, or registered twice); "
                                 "choose another name")
            self._by_name[name] = _registered(name, spec, where)
        self._by_spec = {o.spec: o.name for o in self._by_name.values()}

    @classmethod
    def from_settings(cls, settings: Settings) -> EncoderCatalog:
        """The catalog of `settings.encoders` and the `[encoders]` table of `settings.encoders_file`."""
        registered: dict[str, str] = dict(settings.encoders)
        if settings.encoders_file:
            where = f"FACTOR4_ENCODERS_FILE={settings.encoders_file}"
            try:
                with open(settings.encoders_file, "rb") as fh:
                    table = tomllib.load(fh).get("encoders", {})
            except OSError as exc:
                raise ValueError(f"{where}: cannot read it ({exc.strerror or exc})") from None
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{where}: not valid TOML ({exc})") from None
            if not isinstance(table, dict):
                raise ValueError(f"{where}: [encoders] must be a table of name = \"spec\"")
            for name in table:
                if name in registered:
                    raise ValueError(f"{where}: encoder {name!r} is also in FACTOR4_ENCODERS; define it once")
            registered |= table
        return cls(registered)

    def offered(self) -> list[Offered]:
        return list(self._by_name.values())

    def preload(self) -> None:
        """Load every offered encoder now (once per process; fingerprints need none)."""
        from detector.encoders import load_encoder

        for o in self._by_name.values():
            if o.kind == "encoder":
                load_encoder(o.spec)

    def resolve(self, names: Sequence[str]) -> list[str]:
        """The specs of the encoders *names*; 422 `unknown_encoder` for one not offered (the
        same answer for any string not offered: nothing is looked up on disk)."""
        specs = []
        for name in names:
            offered = self._by_name.get(name.strip().lower()) if isinstance(name, str) else None
            if offered is None:
                shown = "".join(c if c.isprintable() else "?" for c in str(name)[:300])
                raise ServiceError(422, "unknown_encoder",
                                   f"encoder '{shown}' is not offered here; choose from "
                                   f"{', '.join(self._by_name)} (GET /encoders); other models are registered "
                                   "by the service's operator (FACTOR4_ENCODERS)")
            specs.append(offered.spec)
        return specs

    def name_of(self, stored: str) -> str:
        """How a collection's stored encoder is shown to tenants: its offered name, never a
        server path."""
        if (name := self._by_spec.get(stored)) is not None:
            return name
        base = stored.split(" ", 1)[0].split(":", 1)[0]
        if base in FINGERPRINTS:
            return base
        if stored.startswith("clip:"):
            model, _, pretrained = stored[5:].partition("/")
            return f"clip:{model}/<checkpoint>" if os.path.isabs(pretrained) else stored
        return stored
