"""Every default factor4 uses, defined once.

The library, the CLI and the service all read these values; nothing else in the code base
restates them. Values that a deployment changes (where collections live) are read from the
environment here too.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the folder that holds collections and caches.
HOME_ENV = "FACTOR4_HOME"
#: Used when FACTOR4_HOME is unset (XDG data dir convention).
DEFAULT_HOME = Path("~/.local/share/factor4")

#: Encoders a new collection gets when none are named: SSCD + PDQ for images,
#: MiniLM + word shingles for text.
DEFAULT_ENCODERS: tuple[str, ...] = ("sscd", "pdq", "minilm", "shingles")

# --- loading -------------------------------------------------------------------------------
#: Largest file read as a work or an output, in bytes.
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Largest decoded image, in pixels; bigger ones are refused as decompression bombs.
MAX_IMAGE_PIXELS = 64_000_000
#: Smallest image side accepted, in pixels.
MIN_IMAGE_SIDE = 8
#: Background that transparent pixels are flattened onto.
ALPHA_BACKGROUND = (255, 255, 255)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")
TEXT_EXTENSIONS = (".txt", ".md")

# --- text segmentation ---------------------------------------------------------------------
#: A passage is this many words; consecutive passages overlap by PASSAGE_OVERLAP words.
PASSAGE_WORDS = 120
PASSAGE_OVERLAP = 40
#: Word n-gram length of the exact text fingerprint.
SHINGLE_WORDS = 5

# --- encoders ------------------------------------------------------------------------------
#: Images are resized to this square before SSCD (the SSCD authors' recommended inference size).
SSCD_SIZE = 288
ENCODE_BATCH_SIZE = 32
#: A bulk add commits after this many new works, so an interruption keeps what was done.
ADD_COMMIT_EVERY = 256

# --- search and scoring --------------------------------------------------------------------
#: Nearest segments fetched per query vector.
SEARCH_K = 20
#: Matches reported per input.
TOP_MATCHES = 5

#: Each signal is mapped to 0..1 evidence, piecewise-linearly, so that its "similar"
#: threshold lands on SIMILAR_SCORE and its "copy" threshold on COPY_SCORE. The match score
#: is the strongest signal's evidence; verdicts read the score against the same two cut points.
SIMILAR_SCORE = 0.4
COPY_SCORE = 0.7
#: (floor, similar, copy, ceiling) raw thresholds per signal, in the signal's own units.
SIGNAL_THRESHOLDS: dict[str, tuple[float, float, float, float]] = {
    # SSCD cosine of the output with the work.
    "sscd": (0.20, 0.45, 0.60, 0.90),
    # PDQ Hamming distance (lower is closer; mapped in reverse). 31 is Meta's copy threshold.
    "pdq_distance": (128.0, 70.0, 31.0, 0.0),
    # MiniLM cosine of the best output window with the best passage.
    "minilm": (0.40, 0.75, 0.97, 1.00),
    # Share of the output's words covered by 5-word runs found verbatim in the work.
    "shingle_coverage": (0.0, 0.10, 0.35, 1.0),
    # Longest verbatim run, in words.
    "longest_run_words": (4.0, 12.0, 30.0, 120.0),
    # CLIP cosine: same subject / style. Capped below COPY_SCORE; never a copy by itself.
    "clip": (0.50, 0.85, 1.01, 1.02),
}


def home(path: str | os.PathLike[str] | None = None) -> Path:
    """Folder that holds collections: *path* if given, else $FACTOR4_HOME, else DEFAULT_HOME."""
    chosen = path if path is not None else os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Path(chosen).expanduser()
