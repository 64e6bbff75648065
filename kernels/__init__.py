"""Triton kernels of rdfer, installed as rdfer.kernels."""
