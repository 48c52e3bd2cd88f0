"""`attn-zoo generate`: a tiny trained byte LM continues a prompt; greedy decoding picks the parallel
forward's argmax; sampling is seeded; bad workdirs and lengths fail in one line."""
import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from attn_zoo import cli, configs, train
from attn_zoo.train import generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    base = tmp_path_factory.mktemp("gen")
    text = base / "text"
    text.mkdir()
    for i in range(12):  # enough files for every split (by path hash)
        (text / f"f{i}.txt").write_text("the quick brown fox jumps over the lazy dog. " * 4)
    c = configs.load(os.path.join(ROOT, "configs", "bytelm.py:local,smoke"),
                     [f"--config.data.dir={text}", "--config.data.max_length=32",
                      "--config.data.val_percent=20", "--config.data.test_percent=20",
                      "--config.attention.window=4", "--config.train.num_steps=2",
                      "--config.train.eval_every=2", "--config.train.checkpoint_every=2"])
    train.train_and_evaluate(c, str(base / "w"))
    return str(base / "w")


def test_greedy_continues_with_the_forwards_argmax(workdir):
    r = generate.generate(workdir, "the ", 6)
    assert r["tokens"] == 6 and r["step"] == 2 and r["attention"] == "local" and r["tokens_per_s"] > 0
    assert r["text"] == bytes(r["ids"]).decode("utf-8", errors="replace")
    model, _, _ = generate.load_model(workdir)
    ids = list(b"the ") + r["ids"]
    logits = model(jnp.asarray([ids]), jnp.ones((1, len(ids)), bool))
    assert np.argmax(np.asarray(logits[0, 3:9]), axis=-1).tolist() == r["ids"]
    assert generate.generate(workdir, "the ", 6)["ids"] == r["ids"]


def test_sampling_is_seeded_and_the_cli_prints(workdir, capsys):
    r = generate.generate(workdir, "fox", 8, temperature=1.0, seed=3)
    assert cli.main(["generate", "--workdir", workdir, "--prompt", "fox", "--tokens", "8",
                     "--temperature", "1.0", "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "fox" + r["text"] + "\n"  # the same seed, the same bytes
    assert "8 tokens at" in captured.err and "tokens/s (local, step 2" in captured.err


def test_one_line_errors(workdir, tmp_path, capsys):
    def error(*args):
        assert cli.main(["generate", "--workdir", *args]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        return err

    assert "more than the model's max length 32" in error(workdir, "--prompt", "x" * 30, "--tokens", "3")
    assert "--prompt is empty" in error(workdir, "--prompt", "", "--tokens", "3")
    assert "--tokens 0 is not allowed" in error(workdir, "--prompt", "a", "--tokens", "0")
    assert "holds no config.json" in error(str(tmp_path), "--prompt", "a", "--tokens", "1")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(os.path.join(workdir, "config.json"), bare / "config.json")
    assert "no checkpoint in" in error(str(bare), "--prompt", "a", "--tokens", "1")
    other = tmp_path / "other"
    other.mkdir()
    config = json.load(open(os.path.join(workdir, "config.json")))
    config["data"]["task"], config["model"]["head"] = "listops", "classifier"
    (other / "config.json").write_text(json.dumps(config))
    assert "is not a byte LM workdir" in error(str(other), "--prompt", "a", "--tokens", "1")
