"""Fine-tuning bridges (nnU-Net v2)."""
