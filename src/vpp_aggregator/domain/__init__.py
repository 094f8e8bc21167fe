"""Pure domain core: no I/O, no frameworks; adapters depend on it, never the reverse."""
