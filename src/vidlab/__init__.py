"""vidlab: config-composed video experiments (Hydra configs, Lightning modules, MLflow tracking)."""

__version__ = "0.3.0"  # checkpoints carry it (restoration/module.py); pyproject reads it from here
