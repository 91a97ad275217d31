"""The service's settings, read once from the environment (prefix FACTOR4_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from detector import config


class Settings(BaseSettings):
    """Service configuration. Limits default to the library's own (`detector.config`) where it
    has one; every limit is named, with its value, in the error a request exceeding it gets."""

    model_config = SettingsConfigDict(env_prefix="FACTOR4_")

    home: str | None = None  # FACTOR4_HOME; None = detector.config.home()
    #: Largest request body (413 too_large): checked from Content-Length, then while reading.
    max_request_bytes: int = Field(4 * config.MAX_FILE_BYTES, gt=0)
    #: Largest single uploaded file (413 too_large).
    max_upload_bytes: int = Field(config.MAX_FILE_BYTES, gt=0)
    #: Largest decoded image, in pixels (413 image_too_large); the library's bomb limit by default.
    max_image_pixels: int = Field(config.MAX_IMAGE_PIXELS, gt=0)
    #: Longest text scanned as JSON (422 text_too_long).
    max_text_chars: int = Field(1_000_000, gt=0)
    #: Most files in one POST .../works (422 too_many_files).
    max_files_per_upload: int = Field(100, gt=0)
    #: Most outputs (files and manifest lines) in one batch scan (422 batch_too_large).
    max_batch_outputs: int = Field(1_000, gt=0)
    #: Most batches one tenant may have queued or running at once (429 too_many_batches).
    max_pending_batches: int = Field(20, gt=0)
    #: Every this many seconds freed heap memory is handed back to the system (glibc's
    #: malloc_trim; scans free many mid-sized buffers glibc would otherwise keep). 0 = never.
    trim_seconds: float = Field(30.0, ge=0)
    #: Threads that run CPU work (scans, uploads) beside the event loop; more than the cores
    #: only adds memory. And the malloc arenas glibc may use (0 = glibc's default).
    worker_threads: int = Field(8, gt=0)
    malloc_arenas: int = Field(2, ge=0)
    #: Requests per second per API key, sustained, and the burst allowed (429 rate_limited).
    rate_per_second: float = Field(10.0, gt=0)
    rate_burst: int = Field(20, gt=0)
    #: Encoders tenants may name besides the built-in ones, name -> spec (JSON in
    #: FACTOR4_ENCODERS), and a TOML file whose [encoders] table adds more (see service.encoders).
    encoders: dict[str, str] = Field(default_factory=dict)
    encoders_file: str | None = None
    #: Load every offered neural encoder when the service starts (memory is then what it will
    #: be, and a registered checkpoint that cannot be loaded stops the start); otherwise each
    #: is loaded once, by the first request that needs it.
    preload_encoders: bool = False
