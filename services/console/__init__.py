"""The web console: the seed's offset picture drawn live from the running stack (read-only)."""
