"""Readers of external data files (charging sessions, weather)."""
