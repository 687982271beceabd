"""Stain restoration: data, corruption, U-Net, temporal smoothing, metrics, LightningModule."""
