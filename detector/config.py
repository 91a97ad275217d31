"""Every default factor4 uses, defined once.

The library, the CLI and the service all read these values; nothing else in the code base
restates them. Values that a deployment changes (where collections live) are read from the
environment here too.
"""

from __future__ import annotations

import os
from pathlib import Path


def _env_number(name: str, default: float, kind: type) -> float:
    """*default*, or the number in environment variable *name* (an unreadable one is an error
    that names it)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a {kind.__name__}") from None
    if not value > 0:
        raise ValueError(f"environment variable {name}={raw!r} must be positive")
    return value

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
#: Formats refused wherever an input is read (CLI, library, every route), whatever the file is
#: called: vector and scriptable documents, which can carry scripts, external references and
#: unbounded rendering work. Their content is recognised too (see detector.filetypes).
REFUSED_EXTENSIONS = (".svg", ".svgz", ".pdf", ".ps", ".eps", ".ai", ".xml", ".html", ".htm", ".xhtml")

# --- JSON from users (bodies, form fields, manifest lines, sidecars; see detector.safejson) ----
#: Deepest nesting of arrays and objects.
JSON_MAX_DEPTH = 32
#: Most keys in one object, and most items in one array.
JSON_MAX_KEYS = 10_000
JSON_MAX_ITEMS = 100_000
#: Longest string (key or value), in characters; a text scanned as JSON is limited by the
#: service's max_text_chars instead, when that is larger.
JSON_MAX_STRING = 1_000_000
#: Largest document, in bytes (a manifest line; a service body is also held to max_request_bytes).
JSON_MAX_BYTES = 8 * 1024 * 1024
#: Integers must lie within +-(2**64 - 1); larger ones are refused (no float may be infinite or NaN).
JSON_MAX_INT_BITS = 64
#: Longest metadata field (title, creator, licence, source_url, extra fields), in characters.
META_MAX_CHARS = 10_000
#: Largest page offset a listing accepts (works, batches): far past any collection, far inside
#: SQLite's 64-bit integers.
MAX_OFFSET = 10**12

# --- text segmentation ---------------------------------------------------------------------
#: A passage is this many words; consecutive passages overlap by PASSAGE_OVERLAP words.
PASSAGE_WORDS = 120
PASSAGE_OVERLAP = 40
#: An output is searched in windows of PASSAGE_WORDS words that overlap by this many, fewer than
#: the stored passages do: each window costs one MiniLM forward pass of the scan (the encode is
#: over half of it), and whatever the windows' overlap, each overlaps some stored passage by at
#: least 80 words, since passages start every 80. 1,000 words: 9 windows (40 overlap: 12, 20: 10).
WINDOW_OVERLAP = 10
#: Word n-gram length of the exact text fingerprint.
SHINGLE_WORDS = 5
#: Winnowing window: a work stores the smallest of every SHINGLE_WINNOW consecutive shingle keys
#: (~2/(w+1) of them), which still finds every verbatim run of SHINGLE_WORDS + SHINGLE_WINNOW - 1
#: words. 1 stores every key.
SHINGLE_WINNOW = 4

# --- text alignment ------------------------------------------------------------------------
#: Most unmatched words tolerated between two aligned words (replaced, inserted or deleted).
ALIGN_GAP = 4
#: Most words between two chained segments (each 2+ words matched on one diagonal), in both texts.
ALIGN_CHAIN_GAP = 10
#: Fewest matched words an aligned stretch needs to be reported.
ALIGN_MIN_WORDS = 6
#: A run of at least this many consecutive equal words is a "verbatim" span; shorter runs
#: inside an aligned stretch make it "near".
VERBATIM_MIN_WORDS = 8
#: Cap on equal-word pairs examined per output and work region (the most frequent words go first).
ALIGN_MAX_PAIRS = 2_000_000
#: A stretch with at least this share of its output words matched in order is near-verbatim;
#: below it, reworded ("paraphrase").
NEAR_DENSITY = 0.6
#: Candidate works aligned per output: this many by shared n-grams, and this many by embeddings
#: (each output window's most similar work first, then each window's second, ...).
ALIGN_WORKS = 10
#: Similar passages of a candidate work whose neighbourhood is aligned (each window's best
#: passage of the work first, then each window's second best, ...).
ALIGN_PASSAGES = 8
#: Around a shared n-gram, the work is aligned this far (characters) each way, at most.
ALIGN_REGION_CHARS = 20_000
#: A work is aligned whole when output words x work words is at most this (a 120-word output
#: against a 40,000-word work); larger pairs align only around the work's hits.
ALIGN_FULL_CELLS = 5_000_000
#: Only works up to this many words (a long play) are aligned whole; tokenising bigger ones per
#: scan costs more than it finds (~0.1 s for 80,000 words).
ALIGN_FULL_WORK_WORDS = 50_000
#: Beyond ALIGN_WORKS, more works (next by embedding similarity) are aligned whole while their
#: output words x work words add up to at most this (short outputs against works of plays' size).
ALIGN_EXTRA_CELLS = 60_000_000
#: Average characters per word, to estimate a stored text's words from its length.
CHARS_PER_WORD = 6
#: Whole works kept tokenised in memory for alignment.
WHOLE_TEXT_CACHE = 64
#: Words whose keys (see fingerprints.word_keys) a process keeps, for the texts it aligns.
WORD_KEY_CACHE = 200_000
#: Most characters of one work aligned with one output.
ALIGN_MAX_REGION_CHARS = 400_000
#: A phrase held by at least this many works of a collection is common text: reported, discounted.
COMMON_MIN_WORKS = 3
#: Most words in one output text; longer ones are refused (split them).
MAX_SCAN_WORDS = 50_000

# --- encoders ------------------------------------------------------------------------------
#: Images are resized to this square before SSCD (the SSCD authors' recommended inference size).
SSCD_SIZE = 288
ENCODE_BATCH_SIZE = 32
#: MiniLM on ONNX Runtime runs each text in a forward pass of its own (no padding), on
#: single-threaded sessions, this many passes side by side; None: one per CPU this process may
#: use. The threads are shared by every encoder and scan of a process. Against one pass of a
#: whole batch on ONNX Runtime's own two threads, on two cores: a 1,000-word output's 10
#: windows 1.5-1.9x as fast (int8), ingest of 128 passages 1.8x (int8) and 1.6x (float). And a
#: text's vector no longer depends on what it was batched with (int8 quantises each pass's
#: activations with one scale, padding included: batched, a vector moved by up to 0.016).
TEXT_ENCODE_THREADS: int | None = None
#: Images are scaled down to at most this side before PDQ hashing (PDQ reduces to 64 x 64
#: anyway; hashing a 4000-pixel photo whole costs ~20x an SSCD encode). Measured on four
#: photographs: at 384 a mirrored copy is 6-14 bits from the original's flip-aware hash
#: (512: 10-22, 256: 24-28) and hashing costs 4.5 ms (512: 7.7 ms).
PDQ_MAX_SIDE = 384
#: Each image work keeps a JPEG thumbnail of at most this side (about 30 KB), for calibration,
#: reports and the web page, since the work's own file may move.
THUMBNAIL_SIDE = 384
THUMBNAIL_QUALITY = 90

# --- image regions (see detector.regions) --------------------------------------------------
#: Parts of each reference image indexed beside the whole, as fractions of the image (left,
#: top, width, height); the SSCD index holds 1 + len(REFERENCE_REGIONS) vectors per image work.
#: None by default: measured on 300 works and 1,100 edited queries (scripts/bench_image.py
#: data), indexing the four 2/3 corners and the 7/9 centre lowered recall at 1 % false flags
#: from 0.987 to 0.977 (the extra vectors give unrelated outputs more chances to score high),
#: and crops were found as well without them. Kept configurable for collections of large
#: works that outputs crop heavily, e.g. ((0, 0, 2/3, 2/3), (1/3, 0, 2/3, 2/3), ...).
REFERENCE_REGIONS: tuple[tuple[float, float, float, float], ...] = ()
#: Output regions searched at scan time (never stored): rectangles whose width and height are
#: each one of these fractions of the output, at every cell offset of SSCD's 9 x 9 grid (4, 6
#: and 8 cells: 144 regions). A work pasted over 30-60 % of a composite's area spans ~0.55-0.77
#: of its side. Measured on the benchmark's data, recall at 1 % false flags: 0.987 with these,
#: 0.987 with 4/5/7/8 cells (256 regions) or 3 to 8 (729), 0.983 with 5/7/8 (100).
QUERY_REGION_SIDES: tuple[float, ...] = (0.45, 0.67, 0.9)
#: A matched output region smaller than this share of the output makes the match "partial".
PARTIAL_AREA = 0.8
#: A region (of the output, or of the work) is named as the match only when its score beats
#: the whole image's by at least this much; otherwise the match is the whole image.
REGION_MARGIN = 0.05
#: An output that matches a work as a whole may be a crop of it: for this many of the strongest
#: matches (unless PDQ already says the output is the whole picture) the work's thumbnail is
#: encoded (one more SSCD forward pass, about 0.3 of the output's at LOCATE_SIZE) to find the part
#: of the work it shows.
LOCATE_MATCHES = 1
#: The strongest match's regions are placed by local features (`detector.imagescan._place`,
#: ORB keypoints and a fitted similarity transform, in pixels) when at least this many keypoint
#: matches agree; otherwise SSCD's grid regions and the work's thumbnail below locate it.
LOCATE_KEYPOINTS = True
LOCATE_MIN_INLIERS = 12
#: ... at this input size: a 5 x 5 grid (from 129 to 160 pixels), so the part is found to a fifth
#: of each side. On the benchmark's 120 crops (scripts/bench_image.py data) 144 located 26, mean
#: IoU with the true crop 0.66, where 160 located 24 (0.62) at 1.2x the cost; 136 also named
#: parts of whole copies, and 128 (a 4 x 4 grid) located 17.
LOCATE_SIZE = 144
#: ... and not when the output's raw SSCD cosine with the whole work is at least this: it shows
#: (nearly) all of the work. On the benchmark's data no crop was located above 0.85, and this
#: spares the pass for most edited whole copies (text, emoji, borders, colour changes).
LOCATE_MAX_SSCD = 0.9
#: The reported output region is the largest window whose cosine with the work is within this
#: of the best window's (the best alone is often a part of the copied area; measured on
#: composites, mean IoU with the pasted area 0.74 against 0.56 for the best window alone).
REGION_TOLERANCE = 0.04
# --- geometric verification (see detector.keypoints) -----------------------------------------
#: The strongest matches of an image scan (at most this many) whose normalised SSCD score is at
#: least KEYPOINT_MIN_SSCD and whose score is under KEYPOINT_BELOW are verified with local
#: features against the work's thumbnail (~10 ms a scan that does). A match already scoring
#: KEYPOINT_BELOW is a copy without it. A lift stops at KEYPOINT_MAX_SCORE, below the matches
#: other signals settle on their own. One work: with 3, recall was the same on both seeds of the
#: benchmark and µAP lower (seed 1: 0.994 against 0.996; the 2nd and 3rd matches of a copy are
#: look-alikes that verification lifts too).
KEYPOINT_WORKS = 1
KEYPOINT_MIN_SSCD = 0.10
KEYPOINT_BELOW = 0.75
KEYPOINT_MAX_SCORE = 0.9
#: Both images are scaled to this longer side (up or down) before ORB finds keypoints; 640
#: verified more of the benchmark's crops of 320 x 240 screenshots than 512 at the work's 384.
KEYPOINT_SIDE = 640
#: ORB keypoints per image.
KEYPOINT_FEATURES = 1000
#: Lowe's ratio test: a match counts if its distance is under this share of the second best's.
KEYPOINT_RATIO = 0.8
#: RANSAC's tolerance, in pixels at KEYPOINT_SIDE.
KEYPOINT_RANSAC_PIXELS = 4.0
#: Works whose thumbnail features are kept in memory per process (~40 KB each).
KEYPOINT_CACHE = 256
#: How inliers lift a score (`scoring.verified`): score = max(score, min(KEYPOINT_MAX_SCORE,
#: KEYPOINT_WEIGHT * score + KEYPOINT_GAIN * ln(1 + max(0, inliers - KEYPOINT_FREE)))).
#: Unrelated outputs' best works kept up to ~20 inliers (99th percentile of 581, the most 66);
#: 30 inliers lift a 0.5 score to 0.74, a copy. Chosen on the benchmark's seed-0 queries,
#: checked on seed 1.
KEYPOINT_WEIGHT = 0.5
KEYPOINT_GAIN = 0.15
KEYPOINT_FREE = 5

#: A second image copy is a look-alike of the first (`detector.core._lookalikes`), and "similar",
#: when the output's SSCD cosine with it exceeds the two works' own cosine by less than this,
#: while the output's cosine with the first copied work exceeds its cosine with it by at least this.
LOOKALIKE_MARGIN = 0.1

#: A bulk add commits after this many new works, so an interruption keeps what was done.
ADD_COMMIT_EVERY = 256

#: FAISS factory strings of the embedding channels' indexes. "flat" searches exactly and suits
#: up to a few hundred thousand segments; "hnsw" is a graph index (approximate, ~0.5 ms a query
#: at a million vectors) whose deletions rebuild the graph.
ANN_FACTORIES = {"flat": "IDMap2,Flat", "hnsw": "IDMap2,HNSW32,Flat"}
DEFAULT_ANN = "flat"

# --- search and scoring --------------------------------------------------------------------
#: Nearest segments fetched per query vector.
SEARCH_K = 20
#: Nearest image segments fetched per output region (each work has 1 + len(REFERENCE_REGIONS)).
IMAGE_SEARCH_K = 64
#: SSCD score normalisation (Pizzi et al. 2022): each output region's cosine with a work, minus
#: its cosine with the SSCD_NORM_RANK-th most similar work of the collection (the collection is
#: the background set). Rank 5 and rank 3 did equally (rank 10: recall at 1 % false flags 0.983
#: against 0.987; rank 20: 0.970). Flat or textured regions that resemble everything lose
#: their lead; a true copy stands out. With fewer works than that, the least similar one found
#: is used, if there are at least SSCD_NORM_MIN_WORKS; below that there is no normalised score.
SSCD_NORM_RANK = 5
SSCD_NORM_MIN_WORKS = 3
#: Nearest passages fetched per output window: passages of one author's works crowd each other,
#: so a heavily reworded window's source can rank well below 20.
TEXT_SEARCH_K = 100
#: Matches reported per input.
TOP_MATCHES = 5

#: Each signal is mapped to 0..1 evidence, piecewise-linearly, so that its "similar"
#: threshold lands on SIMILAR_SCORE and its "copy" threshold on COPY_SCORE. The match's prior
#: score is the strongest signal's evidence: descriptive, and one more calibrated signal;
#: verdicts come from error rates (COPY_LEVEL, SIMILAR_LEVEL below; `detector.nullmodel`).
SIMILAR_SCORE = 0.4
COPY_SCORE = 0.7
#: (floor, similar, copy, ceiling) raw thresholds per signal, in the signal's own units.
SIGNAL_THRESHOLDS: dict[str, tuple[float, float, float, float]] = {
    # SSCD cosine of the whole output with the work (whole, or one of its indexed regions).
    # Scored only where there is no normalised score (collections of under 3 images).
    "sscd": (0.20, 0.45, 0.60, 0.90),
    # The distilled SSCD student: the same prior cut points (its own null calibrates it).
    "sscd_distilled": (0.20, 0.45, 0.60, 0.90),
    # Best over the output and its regions of SSCD cosine minus the background cosine. Copy at
    # 0.32: 0.8 % of 500 unrelated outputs reached it and 98 % of 600 edited copies (15 edits).
    "sscd_normalised": (0.10, 0.22, 0.32, 0.70),
    # PDQ Hamming distance (lower is closer; mapped in reverse). 31 is Meta's copy threshold.
    "pdq_distance": (128.0, 70.0, 31.0, 0.0),
    # MiniLM cosine of the best output window with the best passage.
    "minilm": (0.40, 0.75, 0.97, 1.00),
    # Words of one aligned stretch matched in order to the work, in verbatim and near-verbatim
    # pieces (at least NEAR_DENSITY of their words equal), after the common-text discount.
    "copied_words": (4.0, 8.0, 16.0, 60.0),
    # All the output's words matched verbatim or near-verbatim, over every aligned stretch (common
    # text discounted): reordered sentences and excerpts cut into pieces copy many words, no one
    # long stretch.
    "copied_total_words": (8.0, 16.0, 32.0, 100.0),
    # Words of one aligned stretch matched in order, reworded pieces included. Capped below
    # COPY_SCORE: rewording is "similar", never a copy by itself.
    "aligned_words": (8.0, 12.0, 28.0, 80.0),
    # CLIP cosine: same subject / style. Capped below COPY_SCORE; never a copy by itself.
    "clip": (0.50, 0.85, 1.01, 1.02),
}


# --- evidence reports ----------------------------------------------------------------------
#: Works shown in report.html (most copied first; report.json lists every matched work), each
#: with its strongest matches side by side.
REPORT_WORKS_SHOWN = 50
#: Skipped inputs listed in report.json (its summary counts them all).
REPORT_SKIPPED_KEPT = 10_000
#: A batch hands freed heap memory back to the system every this many outputs (see batch.trim_heap).
BATCH_TRIM_EVERY = 50

# --- calibration and verdicts -------------------------------------------------------------
#: Verdicts are statements about error rates (`detector.nullmodel`): "copy" needs copying-type
#: evidence and a false-positive rate whose one-sided FPR_CONFIDENCE upper bound is at or below
#: COPY_LEVEL; "similar" at or below SIMILAR_LEVEL. Each collection may set its own levels
#: (`factor4 calibrate COLL --copy-level ... --similar-level ...`).
#: FACTOR4_COPY_LEVEL, FACTOR4_SIMILAR_LEVEL and FACTOR4_CALIBRATION_QUERIES override the defaults
#: for a whole process and the services it starts (the tests run small nulls at coarse levels).
COPY_LEVEL = _env_number("FACTOR4_COPY_LEVEL", 0.001, float)
SIMILAR_LEVEL = _env_number("FACTOR4_SIMILAR_LEVEL", 0.01, float)
FPR_CONFIDENCE = 0.95
#: Unrelated outputs made from the collection's own works (and edited as outputs are) to learn
#: its null: CALIBRATION_QUERIES in all, from at most CALIBRATION_MAX_WORKS works. 3,000 is the
#: smallest null that can state a rate below COPY_LEVEL at 95 % (about 3 / level); it takes
#: about 1 minute for texts and 4 for images on 2 cores, once per collection generation.
CALIBRATION_QUERIES = _env_number("FACTOR4_CALIBRATION_QUERIES", 3000, int)
CALIBRATION_MAX_WORKS = 500
#: Lengths (words) of the text calibration outputs, used in turn.
CALIBRATION_TEXT_WORDS = (30, 120, 300)
#: Share of words replaced in a "reworded" text null output; share of sentences dropped in a
#: "cut down" one.
CALIBRATION_REWORD_SHARE = 0.2
CALIBRATION_CUT_SHARE = 0.35
#: Works sharing this share of their n-gram keys are near-duplicates: left out together.
NEAR_DUPLICATE_SHARE = 0.5
#: A calibration is stale when the number of works has changed by more than this share (or,
#: in collections under 20 works, at all) since it was made. Scans go on using it and say so.
CALIBRATION_STALE_SHARE = 0.05
#: Levels the reliability check (stated against measured, `NullModel.reliability`) reports.
RELIABILITY_LEVELS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
#: The background corpus (`detector.background`): where it lives unless FACTOR4_BACKGROUND names a
#: folder (or "none" for no background); the encoders its collection is made with (it serves the
#: text discount through shingles and image normalisation through SSCD); and how much of a null
#: its outputs may make up (at most this share of the collection's own null size, and this many).
BACKGROUND_ENV = "FACTOR4_BACKGROUND"
#: "0" turns off the fetch at first use (`factor4 create`, the demo); `factor4 background fetch`
#: still fetches. The tests set it: they make their own backgrounds, and reach no network.
BACKGROUND_FETCH_ENV = "FACTOR4_BACKGROUND_FETCH"
BACKGROUND_ENCODERS: tuple[str, ...] = ("sscd", "shingles")
BACKGROUND_NULL_SHARE = 0.25
#: Image collections of at least this many pictures are their own background set for SSCD's
#: normalisation; smaller ones rank the background corpus's pictures too. With the default
#: background (stock icons) in the normalisation of the image benchmark's 209-work collection,
#: verdict false alarms on outside negatives rose from 1.5 % to 3.3 % (scripts/bench_verdicts_image.py).
BACKGROUND_NORM_BELOW = 50
BACKGROUND_NULL_MAX = 1000
#: Largest negatives file set one calibration reads (`factor4 calibrate --negatives`).
CALIBRATION_MAX_NEGATIVES = 20_000


def home(path: str | os.PathLike[str] | None = None) -> Path:
    """Folder that holds collections: *path* if given, else $FACTOR4_HOME, else DEFAULT_HOME."""
    chosen = path if path is not None else os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Path(chosen).expanduser()


def background_home(base: str | os.PathLike[str] | None = None) -> Path | None:
    """Folder of the background corpus: $FACTOR4_BACKGROUND if set ("none" or "off": no
    background), else ``background`` in the home folder (*base*, or the default)."""
    chosen = os.environ.get(BACKGROUND_ENV, "").strip()
    if chosen.lower() in ("none", "off", "0"):
        return None
    if chosen:
        return Path(chosen).expanduser()
    return home(base) / "background"


def tenant_home(base: str | os.PathLike[str] | None, tenant: str) -> Path:
    """The home of one tenant's collections under the service's home *base*
    (``<home>/tenants/<tenant>``): what the service opens for the tenant, and what
    ``factor4 --tenant NAME`` works on."""
    from indexes.records import check_name

    return home(base) / "tenants" / check_name(tenant, "tenant")


def fetch_background_at_first_use() -> bool:
    """Whether `factor4 create` and the demo fetch the default background when there is none."""
    return os.environ.get(BACKGROUND_FETCH_ENV, "1").strip() != "0"
