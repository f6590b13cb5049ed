"""Value types, errors, limits and the event schema shared by every layer."""
