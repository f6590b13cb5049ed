"""The podwall command line (typer + rich)."""
