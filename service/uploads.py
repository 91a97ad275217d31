"""Uploaded files: size and pixel limits, reading an output, staging works for `Detector.add`.

`Detector.add` takes paths, so uploaded works are written to a staging folder under
`<home>/uploads/` (one sub-folder per file, so equal names do not clash) and deleted after the
add. A work's stored `source` is then that staging path; `public_source` shows it as the
uploaded file name.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from detector import config
from detector.errors import InputError
from detector.works import Item, MetadataTable, WorkMeta, meta_fields, read_item
from service.errors import ServiceError
from service.settings import Settings

META_FIELDS = ("title", "creator", "licence", "source_url")
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


async def multipart_uploads(request: Request, limit: int, setting: str, code: str, unit: str, advice: str,
                            expected: str, other_files: int = 0) -> tuple[FormData, list[UploadFile]]:
    """The multipart form of *request* and its `file` uploads: 415 when it is not multipart,
    400 `bad_multipart` when it cannot be parsed, 422 *code* with more than *limit* files (the
    Settings field *setting*; *other_files* more file fields may come besides)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ServiceError(415, "unsupported_media_type", f"send multipart/form-data with {expected}")
    env = f"FACTOR4_{setting.upper()}"
    try:
        form = await request.form(max_files=limit + other_files)
    except StarletteHTTPException as exc:
        if "Too many files" in str(exc.detail):
            raise ServiceError(422, code, f"more than {setting} = {limit} files in one {unit} ({env}); "
                               f"{advice}") from exc
        raise ServiceError(400, "bad_multipart", str(exc.detail)) from exc
    uploads = [u for u in form.getlist("file") if isinstance(u, UploadFile)]
    if len(uploads) > limit:
        raise ServiceError(422, code, f"{len(uploads)} files exceed {setting} = {limit} ({env}); {advice}")
    return form, uploads


async def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    """The file's bytes, refusing more than `max_upload_bytes` without reading further."""
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise ServiceError(413, "too_large", f"{upload.filename or 'upload'}: file exceeds max_upload_bytes = "
                           f"{settings.max_upload_bytes} bytes (FACTOR4_MAX_UPLOAD_BYTES)")
    return data


def check_pixels(data: bytes, name: str, settings: Settings) -> None:
    """Refuse an image whose header declares more than `max_image_pixels` (413
    `image_too_large`), before it is decoded. Non-images and unreadable headers pass: the
    library reports those."""
    limit = settings.max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        w, h = -1, -1
    except Exception:  # noqa: BLE001 - not an image, or a bad header: the library says which
        return
    if w < 0 or w * h > limit:
        size = "too many" if w < 0 else f"{w}x{h} = {w * h}"
        raise ServiceError(413, "image_too_large", f"{name}: image has {size} pixels; max_image_pixels = {limit} "
                           "(FACTOR4_MAX_IMAGE_PIXELS); downscale it")


def item_from_upload(data: bytes, name: str, settings: Settings) -> Item:
    """Read an uploaded output (runs in a worker thread: decoding is CPU work)."""
    check_pixels(data, name, settings)
    try:
        return read_item(data=data, name=name)
    except InputError as exc:
        if "decompression bomb" in str(exc):  # the library's own bomb check
            raise ServiceError(413, "image_too_large", f"{exc} (library limit MAX_IMAGE_PIXELS = "
                               f"{config.MAX_IMAGE_PIXELS})") from exc
        raise


def safe_name(filename: str | None, i: int) -> str:
    """A file name safe to write: the last path component, odd characters replaced."""
    base = _UNSAFE.sub("_", Path((filename or "").replace("\\", "/")).name).strip(" .")[:200]
    return base or f"upload-{i}"


def work_meta(fields: Mapping[str, Any], where: str) -> WorkMeta:
    """An upload's metadata, by the sidecars' rules (`detector.works.meta_fields`); 422
    `bad_metadata` saying what is wrong."""
    try:
        known = meta_fields(fields, where)
    except InputError as exc:
        raise ServiceError(422, "bad_metadata", str(exc)) from exc
    if known.pop("file", None) is not None:
        raise ServiceError(422, "bad_metadata", f"{where}: 'file' (or 'path') is not a metadata field here: the "
                           "upload's file name says which work it describes")
    return WorkMeta(**known)


class Staging:
    """Uploaded works written to one staging folder, with their metadata."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths: list[Path] = []
        self.meta: dict[str, WorkMeta] = {}

    def add(self, data: bytes, filename: str | None, meta: WorkMeta | None) -> Path:
        i = len(self.paths)
        folder = self.root / str(i)
        folder.mkdir()
        path = folder / safe_name(filename, i)
        path.write_bytes(data)
        self.paths.append(path)
        if meta is not None:
            self.meta[str(path)] = meta
        return path

    def table(self) -> MetadataTable | None:
        return MetadataTable(None, self.meta) if self.meta else None


def uploads_root(home: Path) -> Path:
    return home / "uploads"


@contextmanager
def staging(home: Path) -> Iterator[Staging]:
    root = uploads_root(home)
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"staging-{os.getpid()}-", dir=root))
    try:
        yield Staging(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale_staging(home: Path) -> int:
    """Remove the staging folders of processes that no longer run (the uploads a killed server
    had in flight: none of them was acknowledged, and nothing stored refers to them); folders
    of running servers sharing *home* are kept. Returns how many were removed."""
    root = uploads_root(home)
    if not root.is_dir():
        return 0
    removed = 0
    for folder in root.iterdir():
        m = re.fullmatch(r"staging-(\d+)-.*", folder.name)
        if m is not None and _running(int(m.group(1))):
            continue
        shutil.rmtree(folder, ignore_errors=True)  # a dead server's, or an older version's
        removed += 1
    return removed


def scrub(value: Any, home: Path) -> Any:
    """*value* (JSON-like) with staging paths replaced by file names, in every string."""
    if isinstance(value, str):
        prefix = str(uploads_root(home)) + os.sep
        if prefix not in value:
            return value
        return re.sub(re.escape(prefix) + r"[^" + re.escape(os.sep) + r"]+" + re.escape(os.sep) + r"\d+"
                      + re.escape(os.sep), "", value)
    if isinstance(value, dict):
        return {k: scrub(v, home) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, home) for v in value]
    return value
