"""podwall: a Layer-7 container segmentation firewall (see README.md and ../shared/DESIGN.md)."""
