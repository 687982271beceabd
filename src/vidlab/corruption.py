"""Public stain API (re-exported from :mod:`vidlab.restoration.corruption`)."""

from vidlab.restoration.corruption import apply_stain, circular_stain_mask

__all__ = ["apply_stain", "circular_stain_mask"]
