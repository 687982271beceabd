"""vidlab: config-composed video experiments (Hydra configs, Lightning modules, MLflow tracking)."""

__version__ = "0.1.0"
