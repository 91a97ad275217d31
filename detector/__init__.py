"""factor4's library: load works and outputs, encode them, store and search collections,
score and explain matches. Importable without FastAPI.

    from detector import Detector
    det = Detector()
    det.create("art")
    det.add("art", ["works/"])
    results = det.scan("art", ["output.png"])
"""

from __future__ import annotations

import os

# OpenMP threads (FAISS's, torch's) spin after each parallel region by default, starving the
# ONNX Runtime and numpy work that follows on a small machine (an image scan took 1.6x longer).
# Must be set before the OpenMP runtime loads; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


from typing import Any

__version__ = "0.1.0"
__all__ = ["Detector", "__version__"]


def __getattr__(name: str) -> Any:  # keep `import detector` light: load the core on first use
    if name == "Detector":
        from detector.core import Detector

        return Detector
    raise AttributeError(f"module 'detector' has no attribute {name!r}")
