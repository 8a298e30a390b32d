"""Archival search: embedders and hybrid retrieval."""
