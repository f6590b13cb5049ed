"""The lab: synthetic traffic today; network-namespace pods with real servers later."""
