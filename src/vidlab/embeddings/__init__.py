"""Clip embeddings (``extract.py``): the clip index of a video collection, its validation, and frozen-backbone
embeddings."""
