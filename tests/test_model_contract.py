"""The model side of the grown contract: positions (sinusoidal, learned, rope, alibi, nope),
grouped key/value heads, packed rows (segment_ids) in the model, the loss and the byte LM."""
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from attn_zoo import configs, data, train
from attn_zoo.data import bytelm
from attn_zoo.models import Transformer
from attn_zoo.train import steps

N, VOCAB, H = 16, 32, 4
KINDS = ("sinusoidal", "learned", "rope", "alibi", "nope")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(attn="dense", **overrides):
    c = dict(num_layers=2, emb_dim=16, qkv_dim=16, mlp_dim=32, num_heads=H, dropout=0.0,
             attention_dropout=0.0, positions="sinusoidal", pooling="mean", num_global_tokens=0,
             head="lm", layer_attention=(), dtype="float32")
    c.update(overrides)
    return Transformer(ml_collections.ConfigDict(c), {"name": attn}, vocab_size=VOCAB, num_classes=VOCAB,
                       max_length=N, rngs=nnx.Rngs(0))


def _inputs(seed=0):
    return jax.random.randint(jax.random.key(seed), (2, N), 1, VOCAB), jnp.ones((2, N), bool)


@pytest.mark.parametrize("kind", KINDS)
def test_each_positions_kind_is_causal_and_trains_a_step(kind):
    model = _model(positions=kind)
    inputs, mask = _inputs()
    out = model(inputs, mask)
    assert out.shape == (2, N, VOCAB) and bool(jnp.isfinite(out).all())
    later = inputs.at[:, 9:].set((inputs[:, 9:] + 1) % VOCAB)
    np.testing.assert_allclose(model(later, mask)[:, :9], out[:, :9], atol=1e-5)
    train_config = ml_collections.ConfigDict(dict(train=dict(
        seed=0, learning_rate=1e-2, warmup_steps=1, num_steps=10, schedule="constant",
        weight_decay=0.0, grad_clip=1.0)))
    tx = steps.optimizer(train_config.train)
    graphdef, state = steps.create_state(model, tx)
    batch = {"inputs": inputs, "mask": mask, "labels": jnp.zeros(2, jnp.int32), "weight": jnp.ones(2)}
    new, metrics = jax.jit(steps.make_train_step(graphdef, tx, train_config, "lm"))(state, batch)
    assert math.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new["params"], state["params"])
    assert max(jax.tree.leaves(moved)) > 0


def test_positions_kinds_differ_and_rope_options_reach_the_attention():
    inputs, mask = _inputs()
    outs = {k: np.asarray(_model(positions=k)(inputs, mask)) for k in ("rope", "alibi", "nope")}
    assert not np.allclose(outs["rope"], outs["nope"]) and not np.allclose(outs["alibi"], outs["nope"])
    model = _model(positions="rope", rope_base=500.0, rope_fraction=0.5)
    assert model.blocks[0].attn.rope == (500.0, 0.5) and model.blocks[0].attn.alibi_slopes is None
    assert not np.allclose(model(inputs, mask), outs["rope"])  # base and fraction change the output
    assert len(_model(positions="alibi").blocks[1].attn.alibi_slopes) == H


def test_refusals():
    with pytest.raises(ValueError, match="model.positions must be one of sinusoidal, learned, rope"):
        _model(positions="relative")
    with pytest.raises(ValueError, match="model.num_kv_heads=3 is not allowed with model.num_heads=4"):
        _model(num_kv_heads=3)
    def load(presets, *overrides):
        return configs.load(os.path.join(ROOT, "configs", f"bytelm.py:dense,smoke{presets}"), list(overrides))

    c = load(",rope,gqa", "--config.model.rope_fraction=0.25", "--config.model.positions=alibi")
    assert (c.model.num_kv_heads, c.model.rope_fraction, c.model.positions) == (1, 0.25, "alibi")
    assert "rope_base" not in load("").model  # the preset adds it
    assert (load("").data.pack, load("").data.isolate, load(",windowed").data.pack) == (True, False, False)
    with pytest.raises(ValueError, match="config.model.positions='rotary' is not allowed; allowed: one of"):
        load("", "--config.model.positions=rotary")
    with pytest.raises(ValueError, match=r"config.model.rope_fraction=1.5 is not allowed; allowed: a number in "
                                         r"\(0, 1\]"):
        load(",rope", "--config.model.rope_fraction=1.5")
    with pytest.raises(ValueError, match="config.model.num_kv_heads=3 is not allowed with config.model.num_heads=2"):
        load(",gqa", "--config.model.num_kv_heads=3")
    with pytest.raises(ValueError, match="config.model.positions='alibi' is not allowed with attention 'linear'; "
                                         "allowed: a variant that takes alibi_slopes: .*blockwise"):
        configs.load(os.path.join(ROOT, "configs", "bytelm.py:linear,smoke"), ["--config.model.positions=alibi"])
    with pytest.raises(ValueError, match="config.data.isolate=True is not allowed with attention 'linear'"):
        configs.load(os.path.join(ROOT, "configs", "bytelm.py:linear,smoke,isolated"))
    configs.load(os.path.join(ROOT, "configs", "bytelm.py:linear,smoke"))  # the default fits every causal variant
    with pytest.raises(ValueError, match="attention 'linear' does not support alibi_slopes"):
        _model("linear", positions="alibi")
    inputs, mask = _inputs()
    seg = jnp.zeros_like(inputs)
    with pytest.raises(ValueError, match="2 CLS/global token"):
        _model(num_global_tokens=2)(inputs, mask, segment_ids=seg)
    with pytest.raises(ValueError, match="need a per-token head"):
        _model(head="classifier")(inputs, mask, segment_ids=seg)


def _repeat_kv(gqa, full, groups):
    """full's parameters := gqa's, with each key/value head's projection repeated `groups` times:
    the model with H key/value heads that computes what the grouped one does."""
    def tie(path, x):
        if len(path) >= 3 and path[-3] == "attn" and path[-2] in ("key", "value"):
            shape = x.shape
            x = x.reshape(shape[:-1] + (-1, 4))  # [..., Hk, D]
            return jnp.repeat(x, groups, axis=-2).reshape(shape[:-1] + (-1,))
        return x
    pure = nnx.to_pure_dict(nnx.state(gqa))
    tied = jax.tree_util.tree_map_with_path(
        lambda p, x: tie(tuple(getattr(k, "key", getattr(k, "idx", None)) for k in p), x), pure)
    state = nnx.state(full)
    nnx.replace_by_pure_dict(state, tied)
    nnx.update(full, state)


@pytest.mark.parametrize("num_kv_heads,attn,positions", [(1, "dense", "rope"), (2, "dense", "alibi"),
                                                         (2, "blockwise", "sinusoidal"), (2, "routing", "nope")])
def test_grouped_kv_heads_equal_the_repeated_heads_model(num_kv_heads, attn, positions):
    """Hk = 1 and H/2; routing: its k-means state update (train=True) sees the repeated heads."""
    gqa = _model(attn, num_kv_heads=num_kv_heads, positions=positions)
    assert gqa.blocks[0].attn.key.kernel.shape == (16, num_kv_heads * 4)
    full = _model(attn, positions=positions)
    _repeat_kv(gqa, full, H // num_kv_heads)
    inputs, mask = _inputs()
    mask = mask.at[0, 11:].set(False)
    np.testing.assert_allclose(gqa(inputs, mask), full(inputs, mask), atol=1e-5)
    rng = jax.random.key(3)
    np.testing.assert_allclose(gqa(inputs, mask, rng=rng, train=True), full(inputs, mask, rng=rng, train=True),
                               atol=1e-5)
    for a, b in zip(jax.tree.leaves(nnx.state(gqa, nnx.Variable)), jax.tree.leaves(nnx.state(full, nnx.Variable))):
        if a.shape == b.shape:  # all but the key/value projections: the same, state updates included
            np.testing.assert_allclose(a, b, atol=1e-5)


# one row, three documents: positions 0-4, 5-10, 11-15
SEGMENTS = np.array([[0] * 5 + [1] * 6 + [2] * 5, [4] * 9 + [6] * 7])


@pytest.mark.parametrize("kind,short_conv", [(k, 0) for k in KINDS] + [("rope", 3)])
def test_packed_rows_keep_documents_apart(kind, short_conv):
    model = _model("blockwise", positions=kind, short_conv=short_conv)
    inputs, mask = _inputs()
    seg = jnp.asarray(SEGMENTS)
    out = model(inputs, mask, segment_ids=seg)
    # changing document 1's tokens (row 0, positions 0-4) changes no logit of documents 2 and 3
    changed = model(inputs.at[0, :5].set((inputs[0, :5] + 1) % VOCAB), mask, segment_ids=seg)
    np.testing.assert_allclose(changed[0, 5:], out[0, 5:], atol=1e-5)
    assert not np.allclose(changed[0, :5], out[0, :5])
    # document 2 packed at 5-10 gives the logits it gives alone at the start of a row: the
    # segments are apart and every position restarts at the segment start
    alone = jnp.zeros_like(inputs).at[:, :6].set(inputs[0, 5:11])
    single = model(alone, jnp.arange(N)[None].repeat(2, 0) < 6)
    np.testing.assert_allclose(out[0, 5:11], single[0, :6], atol=1e-5)
    # without segment_ids the row is one document again
    assert not np.allclose(model(inputs, mask)[0, 5:11], out[0, 5:11], atol=1e-4)


def test_packed_rope_positions_restart_at_each_segment(monkeypatch):
    """RoPE's scores depend on position differences only, so a restart is invisible in the
    outputs above: check the positions the model rotates q and k by."""
    from attn_zoo.models import positions, transformer
    seen = []
    monkeypatch.setattr(transformer, "rope", lambda x, pos, **kw: (seen.append(pos), positions.rope(x, pos, **kw))[1])
    model = _model(positions="rope", num_layers=1)
    inputs, mask = _inputs()
    model(inputs, mask, segment_ids=jnp.asarray(SEGMENTS))
    expected = [list(range(5)) + list(range(6)) + list(range(5)), list(range(9)) + list(range(7))]
    assert len(seen) == 2 and all(np.asarray(p).tolist() == expected for p in seen)  # q and k
    seen.clear()
    model(inputs, mask)
    assert all(np.asarray(p).tolist() == list(range(N)) for p in seen)


def test_packed_loss_scores_no_target_across_documents():
    logits = jax.random.normal(jax.random.key(0), (2, N, VOCAB))
    inputs, mask = _inputs()
    batch = {"inputs": inputs, "mask": mask, "labels": jnp.zeros(2, jnp.int32), "weight": jnp.ones(2)}
    assert float(steps.loss_and_metrics(logits, batch, "lm")["count"]) == 2 * (N - 1)
    packed = steps.loss_and_metrics(logits, {**batch, "segment_ids": jnp.asarray(SEGMENTS)}, "lm")
    assert float(packed["count"]) == 2 * (N - 1) - 3  # two boundaries in row 0, one in row 1


def _corpus(d, files=40):
    rng = np.random.default_rng(0)
    for i in range(files):
        with open(os.path.join(d, f"f{i:02d}.txt"), "wb") as f:
            f.write(bytes(rng.integers(97, 123, int(rng.integers(10, 90))).tolist()))
    return str(d)


def test_bytelm_packs_files_into_rows(tmp_path):
    d = _corpus(tmp_path)
    mb = dict.fromkeys(("train", "val", "test"), 10**9)
    packed = bytelm.pack_corpus(d, max_length=32, val_percent=20, test_percent=20, max_bytes=mb)
    files = bytelm._files(d, 20, 20, mb)
    for s, (rows, lengths, seg) in packed.items():
        stream = b"".join(f + b"\0" for f in files[s])
        assert rows.reshape(-1)[:len(stream)].tobytes() == stream and lengths.sum() == len(stream)
        ids = np.asarray(seg)
        assert ids.shape == rows.shape and ids.dtype == np.int32
        real = np.arange(32)[None] < lengths[:, None]
        flat = ids[real]  # one segment per file, in order, each as long as the file + separator
        np.testing.assert_array_equal(np.bincount(flat), [len(f) + 1 for f in files[s]])
        assert (np.diff(flat) >= 0).all() and (ids[~real] == len(files[s])).all()
        np.testing.assert_array_equal(seg[np.array([1, 0])], ids[[1, 0]])


def test_bytelm_default_packs_files_into_rows_without_segments(tmp_path):
    """The default: the split's files, each ended by byte 0, one stream cut into rows; no
    segment_ids, so a row's files see each other and every byte but a row's first is a target."""
    (tmp_path / "text").mkdir()
    c = configs.load(os.path.join(ROOT, "configs", "bytelm.py:linear,smoke"),
                     [f"--config.data.dir={_corpus(tmp_path / 'text')}", "--config.data.max_length=16",
                      "--config.data.val_percent=20", "--config.data.test_percent=20"])
    task = data.load(c.data)
    files = bytelm._files(c.data.dir, 20, 20, dict.fromkeys(("train", "val", "test"), 10**9))["train"]
    stream = np.frombuffer(b"".join(f + b"\0" for f in files), np.uint8)
    split = task.splits["train"]
    assert split.segment_ids is None and "segment_ids" not in data.train_batch(split, 0, 4, 0)
    rows = np.asarray(split.inputs).reshape(-1)
    np.testing.assert_array_equal(rows[:len(stream)], stream)
    assert not rows[len(stream):].any() and len(rows) - len(stream) < 16


def test_bytelm_packed_rope_trains_and_evaluates_at_2x_and_4x(tmp_path):
    (tmp_path / "text").mkdir()
    c = configs.load(os.path.join(ROOT, "configs", "bytelm.py:blockwise,smoke,isolated,rope"),
                     [f"--config.data.dir={_corpus(tmp_path / 'text')}", "--config.data.max_length=16",
                      "--config.data.val_percent=20", "--config.data.test_percent=20",
                      "--config.train.batch_size=4", "--config.train.num_steps=2",
                      "--config.train.eval_every=2", "--config.train.checkpoint_every=2"])
    task = data.load(c.data)
    batch = data.train_batch(task.splits["train"], 0, 4, 0)
    assert batch["segment_ids"].shape == (4, 16)
    # chance scores the targets the loss scores: every stream byte but a row's or a file's first
    files = bytelm._files(c.data.dir, 20, 20, dict.fromkeys(("train", "val", "test"), 10**9))["test"]
    stream = np.frombuffer(b"".join(f + b"\0" for f in files), np.uint8)
    first = np.zeros(len(stream), bool)
    first[np.cumsum([0] + [len(f) + 1 for f in files[:-1]])] = first[::16] = True
    p = np.bincount(stream[~first], minlength=256) / (~first).sum()
    expected = -(p[p > 0] * np.log2(p[p > 0])).sum()
    assert data.chance(task.splits["test"], "lm", 256)["bits_per_byte"] == pytest.approx(expected, abs=1e-9)
    workdir = str(tmp_path / "w")
    result = train.train_and_evaluate(c, workdir)
    assert math.isfinite(result["test_bits_per_byte"])
    for length in (32, 64):
        out = train.evaluate(workdir, length=length)
        assert out["length"] == length and math.isfinite(out["bits_per_token"]) and out["examples"] > 0
