"""Dispatch: one problem definition, two interchangeable solvers, one independent safety check."""
