"""What the variants are built from: the registry and option declarations, masks, the exact tile
and band engines, the kernelized (linear-attention) core, hash/cluster bucketing, and lse merging.

Nothing here registers a variant. These modules import only each other and `attn_zoo.kernels`.
"""
