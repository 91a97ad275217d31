"""The service's settings, read once from the environment (prefix FACTOR4_)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from detector import config


class Settings(BaseSettings):
    """Service configuration. Limits default to the library's own (`detector.config`)."""

    model_config = SettingsConfigDict(env_prefix="FACTOR4_")

    home: str | None = None  # FACTOR4_HOME; None = detector.config.home()
    max_upload_bytes: int = config.MAX_FILE_BYTES
    max_text_chars: int = 1_000_000
