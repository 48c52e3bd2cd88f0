"""Flax NNX models; the only package here that imports flax."""
from attn_zoo.models.transformer import AttentionState, Transformer

__all__ = ["AttentionState", "Transformer"]
