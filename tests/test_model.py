"""The Transformer: heads, pooling, padding and causality, per-layer variants, attention state."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from attn_zoo import attention
from attn_zoo.attention.variants import dense
from attn_zoo.models import AttentionState, Transformer
from attn_zoo.train import steps

N, VOCAB = 12, 16


def _model(attn=None, **overrides):
    c = dict(num_layers=2, emb_dim=16, qkv_dim=16, mlp_dim=32, num_heads=2, dropout=0.1,
             attention_dropout=0.1, positions="sinusoidal", pooling="cls", num_global_tokens=0,
             head="classifier", layer_attention=(), dtype="float32")
    c.update(overrides)
    return Transformer(ml_collections.ConfigDict(c), attn or {"name": "dense"}, vocab_size=VOCAB,
                       num_classes=10, max_length=N, rngs=nnx.Rngs(0))


def _inputs(seed=0):
    inputs = jax.random.randint(jax.random.key(seed), (2, N), 1, VOCAB)
    mask = jnp.arange(N)[None] < jnp.array([[7], [N]])
    return inputs, mask


@pytest.mark.parametrize("overrides", [
    {}, {"pooling": "mean"}, {"num_global_tokens": 2, "positions": "learned"}, {"dtype": "bfloat16"},
    {"short_conv": 3, "pooling": "mean"}])
def test_classifier_ignores_padding(overrides):
    model = _model(**overrides)
    inputs, mask = _inputs()
    out = model(inputs, mask)
    assert out.shape == (2, 10) and out.dtype == jnp.float32 and bool(jnp.isfinite(out).all())
    changed = jnp.where(mask, inputs, (inputs + 3) % VOCAB)
    np.testing.assert_allclose(model(changed, mask), out, atol=1e-6)
    assert not np.allclose(model(inputs, mask, rng=jax.random.key(1), train=True), out)  # dropout on


@pytest.mark.parametrize("short_conv", [0, 3])
def test_lm_head_is_causal(short_conv):
    model = _model(head="lm", short_conv=short_conv)
    inputs, mask = _inputs()
    out = model(inputs, mask)
    assert out.shape == (2, N, VOCAB)
    later = inputs.at[:, 6:].set((inputs[:, 6:] + 1) % VOCAB)
    out2 = model(later, mask)
    np.testing.assert_allclose(out2[:, :6], out[:, :6], atol=1e-6)
    assert not np.allclose(out2[:, 6:], out[:, 6:])


def test_short_conv_mixes_the_last_k_tokens_only():
    model = _model(head="lm", short_conv=3, num_layers=1)
    conv = model.blocks[0].conv
    x = jax.random.normal(jax.random.key(0), (1, N, 16))
    y = conv(x)
    # output t depends on inputs t-2..t: moving input 5 changes outputs 5, 6, 7 and nothing else
    y2 = conv(x.at[:, 5].add(1.0))
    changed = np.flatnonzero(np.abs(np.asarray(y2 - y)).max(-1)[0] > 1e-6)
    assert changed.tolist() == [5, 6, 7]
    with pytest.raises(ValueError, match="model.short_conv must be a kernel size"):
        _model(short_conv=-1)


def test_short_conv_is_the_depthwise_convolution():
    """The shifted-sum form computes nnx.Conv's own causal depthwise convolution, values and grads."""
    conv = _model(head="lm", short_conv=3, num_layers=1).blocks[0].conv
    x = jax.random.normal(jax.random.key(1), (2, N, 16))
    for f in (conv, conv.conv):
        assert f(x).shape == x.shape
    np.testing.assert_allclose(conv(x), conv.conv(x), rtol=1e-5, atol=1e-6)
    cot = jax.random.normal(jax.random.key(2), x.shape)
    grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * cot))(x)  # noqa: E731
    np.testing.assert_allclose(grad(conv), grad(conv.conv), rtol=1e-5, atol=1e-6)
    dw = nnx.grad(lambda m: jnp.sum(m(x) * cot))(conv)
    dw_conv = nnx.grad(lambda m: jnp.sum(m.conv(x) * cot))(conv)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), dw, dw_conv)


def test_per_layer_attention():
    model = _model(layer_attention=("local", {"name": "dense", "score": "dot"}))
    assert [b.attn.name for b in model.blocks] == ["local", "dense"]
    assert dict(model.blocks[1].attn.options)["score"] == "dot"
    with pytest.raises(ValueError, match="3 entries for 2 layers"):
        _model(layer_attention=("local", "dense", "local"))
    with pytest.raises(TypeError, match="no option"):
        _model({"name": "local", "widow": 3})


def test_variant_params_are_trained():
    model = _model({"name": "dense", "score": "additive", "additive_dim": 4})
    params = nnx.state(model, nnx.Param)
    assert {k for k in params["blocks"][0]["attn"]} >= {"attn_params", "query", "key", "value", "out"}
    assert len(params["blocks"][0]["attn"]["attn_params"].get_value()) == 3  # w_q, w_k, v


def _centroid_variant():
    """A toy variant with one trained leaf ('scale') and one update-only leaf ('centroid')."""

    def init(rng, q, k, v, **_):
        return {"centroid": jnp.zeros(q.shape[-1]), "scale": jnp.ones(())}

    def impl(params, q, k, v, *, key_mask, causal, rng):
        out = dense.attention({}, q, k, v, key_mask=key_mask, causal=causal)
        return out * params["scale"] + params["centroid"]

    def update(params, q, k, v, *, key_mask=None):
        mean = jnp.mean(k, axis=(0, 1, 2))
        return {**params, "centroid": 0.5 * params["centroid"] + 0.5 * mean}

    return attention.register("test_centroid", family="clustering", exact=False, supports_causal=True,
                              impl=impl, init_fn=init, state=("centroid",), update=update, replace=True)


def test_attention_state_is_updated_not_differentiated():
    _centroid_variant()
    try:
        model = _model({"name": "test_centroid"}, num_layers=1)
        attn = model.blocks[0].attn
        assert attn.is_state == (True, False)  # leaves in sorted key order: centroid, scale
        assert isinstance(attn.attn_state, AttentionState)
        train = ml_collections.ConfigDict(dict(seed=0, learning_rate=0.1, schedule="constant",
                                               warmup_steps=1, num_steps=1, weight_decay=0.0, grad_clip=0.0))
        tx = steps.optimizer(train)
        graphdef, state = steps.create_state(model, tx)
        inputs, mask = _inputs()
        batch = {"inputs": inputs, "mask": mask, "labels": jnp.array([1, 2]), "weight": jnp.ones(2)}
        step = jax.jit(steps.make_train_step(graphdef, tx, ml_collections.ConfigDict({"train": train}),
                                             "classifier"))
        new, metrics = step(state, batch)
        grads = jax.grad(lambda p: optax.tree.norm(p))(state["params"])  # structure of what is trained
        assert len(grads["blocks"][0]["attn"]["attn_params"].get_value()) == 1  # only 'scale'
        old_c = state["rest"]["blocks"][0]["attn"]["attn_state"].get_value()[0]
        new_c = new["rest"]["blocks"][0]["attn"]["attn_state"].get_value()[0]
        assert float(jnp.abs(old_c).sum()) == 0 and float(jnp.abs(new_c).sum()) > 0
        old_s = state["params"]["blocks"][0]["attn"]["attn_params"].get_value()[0]
        new_s = new["params"]["blocks"][0]["attn"]["attn_params"].get_value()[0]
        assert float(old_s) != float(new_s) and np.isfinite(float(metrics["loss"]))
    finally:
        attention.unregister("test_centroid")


def test_dropout_drops_at_its_rate_and_is_unbiased():
    from attn_zoo.models.transformer import dropout

    x = jnp.ones((4, 1001, 63))
    y = np.asarray(dropout(x, 0.1, jax.random.key(3)))
    kept = y != 0
    assert abs(kept.mean() - 0.9) < 0.005
    np.testing.assert_allclose(y[kept], 1 / 0.9, rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.006  # inverted dropout: the expectation is the input
    assert not np.array_equal(kept, np.asarray(dropout(x, 0.1, jax.random.key(4))) != 0)
    assert dropout(x, 0.1, None) is x and dropout(x, 0.0, jax.random.key(3)) is x


def test_dropout_mask_is_a_fresh_uncorrelated_stream_per_key():
    from attn_zoo.models.dropout import _index_words, hash_bits

    u = np.asarray(hash_bits(jax.random.key(0), (1 << 18,))) / 2**32
    w = np.asarray(hash_bits(jax.random.key(1), (1 << 18,))) / 2**32
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    for lag in (1, 64, 4096):  # neighbours along any axis of a flattened array
        assert abs(np.corrcoef(u[:-lag], u[lag:])[0, 1]) < 0.01
    assert abs(np.corrcoef(u, w)[0, 1]) < 0.01
    np.testing.assert_array_equal(u, np.asarray(hash_bits(jax.random.key(0), (1 << 18,))) / 2**32)
    # arrays past 2^32 elements split their index into two words; every element keeps its own pair
    lo, hi = _index_words((3, 5, 7), limit=40)
    pairs = set(zip(np.asarray(lo).ravel().tolist(), np.asarray(hi).ravel().tolist()))
    assert len(pairs) == 3 * 5 * 7
