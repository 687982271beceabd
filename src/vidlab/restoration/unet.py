"""Compatibility: :mod:`vidlab.restoration.models.unet` under its 0.3 path, so that MLflow models
pickled by 0.3 (which name their classes by module) still load. Removed in 0.5."""

import sys

from vidlab.restoration.models import unet

sys.modules[__name__] = unet
