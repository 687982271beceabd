"""Public stain API (re-exported from :mod:`vidlab.restoration.stains`)."""

from vidlab.restoration.stains import apply_stain, circular_stain_mask

__all__ = ["apply_stain", "circular_stain_mask"]
