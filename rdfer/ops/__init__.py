"""Dispatch layer: each op has a PyTorch twin and a fast path."""
