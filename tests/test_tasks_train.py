"""End to end: every task trains 2 steps from its config's smoke preset; the new model heads.

Path-X is the pathfinder task at 128 px: its config is resolved in test_lra_defaults and its
generator in test_tasks_pathfinder; a 16k-token train step is left out of the test budget.
"""
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from attn_zoo import cli, configs, train
from attn_zoo.data import image, retrieval, text
from attn_zoo.models import Transformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.model.num_layers=1", "--config.model.emb_dim=16", "--config.model.qkv_dim=16",
        "--config.model.mlp_dim=16", "--config.model.num_heads=2", "--config.train.num_steps=2",
        "--config.train.eval_every=2", "--config.train.checkpoint_every=2", "--config.train.log_every=1"]


def _fixture(task, d):
    """Data options for a task, writing its tiny real-format fixture into d when it reads files."""
    if task == "text":
        text.write_fixture(d, per_folder=4)
        return [f"--config.data.dir={d}", "--config.data.max_length=64"]
    if task == "retrieval":
        retrieval.write_fixture(d, rows=8)
        return [f"--config.data.dir={d}", "--config.data.max_length=48"]
    if task == "image":
        image.write_fixture(d, per_batch=4)
        return [f"--config.data.dir={d}", "--config.data.val_size=4"]
    if task in ("pathfinder", "pathx"):
        return [f"--config.data.dir={d}", "--config.data.generator.count=40", "--config.data.generator.shard_size=40"]
    if task == "bytelm":
        for i in range(30):
            with open(os.path.join(d, f"doc{i}.txt"), "w") as f:
                f.write(f"line {i}\n" * 20)
        return [f"--config.data.dir={d}", "--config.data.max_length=32", "--config.data.val_percent=20",
                "--config.data.test_percent=20"]
    return ["--config.data.max_length=48"]  # recall, copy: generated on the fly


@pytest.mark.parametrize("task,variant", [
    ("pathfinder", "local"), ("text", "local"), ("retrieval", "dense"),
    ("image", "dense"), ("recall", "local"), ("copy", "dense"), ("bytelm", "local")])
def test_every_task_trains_end_to_end(task, variant, tmp_path):
    d = str(tmp_path / "data")
    os.makedirs(d, exist_ok=True)
    c = configs.load(f"{ROOT}/configs/{task}.py:{variant},smoke",
                     TINY + ["--config.train.batch_size=4"] + _fixture(task, d))
    if variant == "local":
        c.attention.update(window=4, block=8)
    result = train.train_and_evaluate(c, str(tmp_path / "w"))
    assert result["status"] == "done" and result["best_step"] == 2 and math.isfinite(result["test_loss"])
    with open(tmp_path / "w" / "metrics.jsonl") as f:
        events = [json.loads(x) for x in f]
    assert [e["step"] for e in events if e.get("split") == "train"] == [1, 2]
    if task == "bytelm":
        assert result["test_bits_per_byte"] == pytest.approx(result["test_loss"] / math.log(2))


def test_lra_defaults():
    c = configs.load(f"{ROOT}/configs/retrieval.py")
    assert c.train.warmup_steps < c.train.num_steps and c.model.head == "dual" and c.data.max_length == 4000
    px = configs.load(f"{ROOT}/configs/pathx.py:performer")
    assert (px.data.max_length, px.data.resolution, px.model.positions, px.train.grad_clip) == (
        16384, 128, "learned", 1.0)
    pf = configs.load(f"{ROOT}/configs/pathfinder.py", ["--config.data.resolution=64"])
    assert pf.data.max_length == 4096  # follows the resolution
    assert configs.load(f"{ROOT}/configs/text.py:dense,paper").data.max_length == 4000
    im = configs.load(f"{ROOT}/configs/image.py")
    assert (im.model.num_layers, im.model.positions, im.train.batch_size) == (1, "learned", 256)


def test_bytelm_refuses_non_causal_variants():
    with pytest.raises(ValueError, match=r"'linformer' does not support causal=True; causal variants: .*dense"):
        configs.load(f"{ROOT}/configs/bytelm.py:linformer")


def _model(head, **kw):
    c = dict(num_layers=1, emb_dim=16, qkv_dim=16, mlp_dim=16, num_heads=2, dropout=0.0, attention_dropout=0.0,
             positions="sinusoidal", pooling="cls", num_global_tokens=0, head=head, layer_attention=(),
             dtype="float32")
    c.update(kw)
    return Transformer(ml_collections.ConfigDict(c), {"name": "dense"}, vocab_size=20, num_classes=3,
                       max_length=10, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_dual_head_shares_the_encoder_and_ignores_padding(pooling):
    model = _model("dual", pooling=pooling)
    x = jax.random.randint(jax.random.key(0), (2, 2, 10), 1, 20)
    mask = jnp.arange(10)[None, None] < jnp.array([[[6], [10]], [[3], [8]]])
    out = model(x, mask)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(model(jnp.where(mask, x, 0), mask), out, atol=1e-6)
    swapped = model(x[:, ::-1], mask[:, ::-1])  # [u, v, u·v, u−v] is not symmetric in u, v
    assert not np.allclose(swapped, out)
    with pytest.raises(ValueError, match=r"inputs \[B, 2, N\]"):
        model(x[:, 0], mask[:, 0])


def test_token_head_is_bidirectional_per_position():
    model = _model("token")
    x = jax.random.randint(jax.random.key(0), (2, 10), 1, 20)
    mask = jnp.ones((2, 10), bool)
    out = model(x, mask)
    assert out.shape == (2, 10, 3)
    later = model(x.at[:, 8].set(0), mask)
    assert not np.allclose(later[:, 2], out[:, 2])  # position 2 sees position 8


def test_cli_data_pathfinder_and_check(tmp_path, capsys):
    out = str(tmp_path / "pf")
    assert cli.main(["data", "pathfinder", "--resolution", "32", "--difficulty", "baseline", "--out", out,
                     "--count", "6", "--shard-size", "4"]) == 0
    assert sorted(os.listdir(out)) == ["meta.json", "shard_00000.npz", "shard_00001.npz"]
    capsys.readouterr()
    assert cli.main(["data", "pathfinder", "--check", out]) == 0
    assert "OK" in capsys.readouterr().out
    assert cli.main(["data", "text", "--check", str(tmp_path / "nothing")]) == 1
    assert "PROBLEM" in capsys.readouterr().out
