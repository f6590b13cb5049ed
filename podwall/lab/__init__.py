"""The lab: network-namespace pods with real servers (docs/lab.md), and synthetic traffic for captures."""
