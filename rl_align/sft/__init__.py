"""Supervised fine-tuning (NLL on next-item SIDs) on Ray Train workers with DeepSpeed or DDP."""
