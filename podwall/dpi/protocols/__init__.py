"""One module per application protocol; the order of detection lives in dpi/registry.py."""
