"""The built-in variants, one module each and nothing else: this folder's listing is `attn-zoo list`.

Each module registers its variant on import (`attn_zoo.attention` imports them all).
"""
