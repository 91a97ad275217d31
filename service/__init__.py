"""factor4's HTTP service: a thin FastAPI layer over `detector.Detector`."""
