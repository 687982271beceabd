"""The anomaly probe: a classifier on clip embeddings, scored on clips and frames."""
