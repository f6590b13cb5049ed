"""Deep packet inspection: detectors and sans-IO parsers behind one contract (dpi/base.py)."""
