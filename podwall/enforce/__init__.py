"""Enforcement on a Linux node: nftables rendering (the only place that writes nftables syntax)."""
