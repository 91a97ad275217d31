"""Progress bars for long work: shown on a terminal, silent otherwise (logs still record it)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from tqdm.auto import tqdm


@contextlib.contextmanager
def progress(total: int, desc: str, show: bool | None = None, unit: str = "file") -> Iterator[tqdm]:
    """A tqdm bar on stderr. *show* None means: only when stderr is a terminal."""
    if show is None:
        show = sys.stderr.isatty()
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not show, file=sys.stderr, leave=False)
    try:
        yield bar
    finally:
        bar.close()
