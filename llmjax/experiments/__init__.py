"""Experiments built from several training runs (each module one experiment)."""
