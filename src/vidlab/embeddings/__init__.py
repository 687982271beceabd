"""Clip embeddings: the clip index of a video collection (and, next, extraction and probes)."""
