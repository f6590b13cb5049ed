"""Offline analysis: run the engine over captures, name flows, aggregate, check and learn."""
