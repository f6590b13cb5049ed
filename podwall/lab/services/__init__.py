"""Small Python services that lab pods run (started with `python -m podwall.lab.services.<name>`)."""
