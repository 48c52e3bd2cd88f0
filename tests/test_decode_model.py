"""models.decode: feeding a sequence token by token gives the parallel forward's logits (fp32)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from attn_zoo.models import Transformer
from attn_zoo.models import decode

N, VOCAB = 12, 16


def _model(attn, **overrides):
    c = dict(num_layers=2, emb_dim=16, qkv_dim=16, mlp_dim=32, num_heads=2, dropout=0.1,
             attention_dropout=0.1, positions="sinusoidal", pooling="mean", num_global_tokens=0,
             head="lm", layer_attention=(), dtype="float32")
    c.update(overrides)
    return Transformer(ml_collections.ConfigDict(c), attn, vocab_size=VOCAB, num_classes=VOCAB,
                       max_length=N, rngs=nnx.Rngs(0))


def _decoded(model, inputs):
    cache, run, out = decode.init_cache(model, inputs.shape[0], inputs.shape[1]), decode.jitted(model), []
    for t in range(inputs.shape[1]):
        logits, cache = run(cache, inputs[:, t])
        out.append(logits)
    return jnp.stack(out, axis=1)


ATTN = {"blockwise": {"name": "blockwise", "block_q": 4, "block_k": 4},
        "local": {"name": "local", "window": 3, "block": 4},
        "linear": {"name": "linear", "chunk": 4}}


@pytest.mark.parametrize("short_conv", [0, 3])
@pytest.mark.parametrize("name", sorted(ATTN))
def test_token_by_token_equals_the_forward(name, short_conv):
    model = _model(ATTN[name], short_conv=short_conv)
    inputs = jax.random.randint(jax.random.key(0), (2, N), 1, VOCAB)
    ref = model(inputs, jnp.ones((2, N), bool))
    np.testing.assert_allclose(_decoded(model, inputs), ref, atol=1e-5)


@pytest.mark.parametrize("attn,overrides", [
    (ATTN["local"], {"positions": "rope", "num_kv_heads": 1, "short_conv": 2}),
    (ATTN["linear"], {"positions": "learned", "num_global_tokens": 2}),
    ({"name": "bigbird", "block": 4, "num_random": 1}, {"positions": "alibi"}),  # the eval rng
])
def test_positions_kv_heads_global_tokens_and_rng(attn, overrides):
    model = _model(attn, **overrides)
    inputs = jax.random.randint(jax.random.key(1), (2, N), 1, VOCAB)
    np.testing.assert_allclose(_decoded(model, inputs), model(inputs, jnp.ones((2, N), bool)), atol=1e-5)


def test_refusals():
    with pytest.raises(ValueError, match="decoding needs the causal LM head"):
        decode.init_cache(_model(ATTN["local"], head="token"), 1, N)
    with pytest.raises(ValueError, match="longer than the model's learned positions allow"):
        decode.init_cache(_model(ATTN["local"], positions="learned"), 1, N + 1)
