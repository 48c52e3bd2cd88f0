"""Length extrapolation: `attn-zoo eval --length N` on a trained workdir, and its refusals."""
import json
import math
import os

import pytest

from attn_zoo import attention, cli, configs, data, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(spec, *overrides):
    return configs.load(os.path.join(ROOT, "configs", spec), list(overrides))


def write_workdir(c, path):
    """A workdir holding only config.json, as training writes it: enough for the refusals, which
    must come before any checkpoint (or data) is read."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(json.loads(c.to_json_best_effort()), f)
    return str(path)


@pytest.fixture(scope="module")
def recall_run(tmp_path_factory):
    """Dense attention trained 3 steps on recall at length 64 (the smoke preset)."""
    workdir = str(tmp_path_factory.mktemp("recall-dense"))
    assert train.train_and_evaluate(config("recall.py:dense,smoke"), workdir)["status"] == "done"
    return workdir


def _lines(workdir):
    """The workdir's extrapolation results so far ([] before any); the tests sharing `recall_run`
    may run in any order, or on different xdist workers each with its own copy."""
    path = os.path.join(workdir, "extrapolation.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_evaluate_at_twice_the_length(recall_run):
    before = len(_lines(recall_run))
    result = train.evaluate(recall_run, "test", "best", length=128)
    assert result["length"] == 128 and result["trained_length"] == 64 and result["step"] == 3
    assert math.isfinite(result["loss"]) and 0 <= result["accuracy"] <= 1 and result["examples"] > 0
    assert _lines(recall_run)[-1] == result
    plain = train.evaluate(recall_run)  # without --length: as before, nothing appended
    assert "length" not in plain and len(_lines(recall_run)) == before + 1


def test_cli_eval_length_prints_and_appends(recall_run, capsys):
    before = len(_lines(recall_run))
    assert cli.main(["eval", "--workdir", recall_run, "--split", "val", "--length", "32"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["length"] == 32 and printed["split"] == "val" and math.isfinite(printed["loss"])
    assert len(_lines(recall_run)) == before + 1 and _lines(recall_run)[-1] == printed


@pytest.mark.parametrize("variant", ["linformer", "synthesizer"])
def test_refuses_attention_tied_to_its_length(variant, tmp_path):
    spec = attention.get(variant)
    assert spec.length_limited and spec.max_length == "max_length"
    c = config(f"recall.py:{variant},smoke")
    assert c.attention.max_length < 128  # the config ties it to the data length (64, + 1 spare)
    w = write_workdir(c, tmp_path)
    with pytest.raises(ValueError, match=rf"attention '{variant}' is tied to a maximum length.*"
                                         rf"attention\.max_length={c.attention.max_length} .*length 128 needs 128"):
        train.evaluate(w, length=128)


def test_refuses_learned_positions_longer_than_their_table(tmp_path):
    w = write_workdir(config("recall.py:dense,smoke", "--config.model.positions=learned"), tmp_path)
    with pytest.raises(ValueError, match=r"positions='learned'.*table has 64 rows.*length 128 needs 128"):
        train.evaluate(w, length=128)


def test_refuses_parameters_shaped_by_the_length(tmp_path):
    """BigBird's random blocks as parameters are [query blocks, key blocks]: not in spec.max_length,
    caught by comparing the parameter shapes of the model at both lengths."""
    c = config("recall.py:bigbird,smoke", "--config.attention.random_source=params",
               "--config.attention.block=8")
    with pytest.raises(ValueError, match=r"shape depends on the input length.*\(8, 8\) at length 64, "
                                         r"\(16, 16\) at 128"):
        train.evaluate(write_workdir(c, tmp_path), length=128)


def test_refuses_fixed_length_task(tmp_path, capsys):
    w = write_workdir(config("pathfinder.py:dense,smoke"), tmp_path)
    with pytest.raises(ValueError, match="task 'pathfinder' cannot change its input length"):
        train.evaluate(w, length=2048)
    assert cli.main(["eval", "--workdir", w, "--length", "2048"]) == 1  # a message, no traceback
    err = capsys.readouterr().err
    assert err.startswith("error: task 'pathfinder'") and "Traceback" not in err
    assert not os.path.exists(os.path.join(w, "extrapolation.jsonl"))


def test_registry_length_limit():
    assert not attention.get("dense").length_limited and attention.get("dense").length_limit() is None
    assert attention.get("linformer").length_limit(max_length=100) == 100
    assert {n for n in attention.names() if attention.get(n).length_limited} >= {"linformer", "synthesizer"}


def test_listops_generated_data_follows_the_length(tmp_path):
    """Generated ListOps is generated again at the new length (min_length scaled), into its own dir."""
    c = config("listops.py:dense,smoke", f"--config.data.dir={tmp_path / 'lo'}",
               "--config.data.max_length=24", "--config.data.generator.min_length=4",
               "--config.data.generator.train=32", "--config.data.generator.val=16",
               "--config.data.generator.test=16", "--config.model.num_layers=1",
               "--config.model.emb_dim=16", "--config.model.qkv_dim=16", "--config.model.mlp_dim=16",
               "--config.train.batch_size=8", "--config.train.num_steps=2", "--config.train.eval_every=2",
               "--config.train.checkpoint_every=2")
    moved = data.at_length(c.data, 48)
    assert (moved.max_length, moved.generator.min_length, moved.dir) == (48, 8, f"{tmp_path / 'lo'}-len48")
    assert (c.data.max_length, c.data.generator.min_length) == (24, 4)  # the original is untouched
    workdir = str(tmp_path / "w")
    train.train_and_evaluate(c, workdir)
    result = train.evaluate(workdir, length=48)
    assert result["length"] == 48 and math.isfinite(result["loss"])
    task = data.load(moved)
    lengths = task.splits["test"].mask.sum(1)
    assert task.max_length == 48 and lengths.min() > 8 and lengths.max() < 48


def test_shorter_inputs_use_the_trained_model(tmp_path):
    """Shorter than trained: the model keeps its trained size (learned positions are sliced)."""
    workdir = str(tmp_path)
    train.train_and_evaluate(config("copy.py:dense,smoke", "--config.model.positions=learned"), workdir)
    result = train.evaluate(workdir, "val", "latest", length=32)
    assert result["length"] == 32 and result["checkpoint"] == "latest" and math.isfinite(result["loss"])
    with pytest.raises(ValueError, match="learned"):
        train.evaluate(workdir, length=65)
