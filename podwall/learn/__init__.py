"""Discover mode: observed connections in, proposed whitelist rules out."""
