"""Fault injection: the probes of issue 18 replayed, each small and fast, so none of them comes back.

Each probe gives one `error: ...` line and exit 1 (CLI, run in-process through `cli.main`), a
one-line exception (library), or the right result. A probe already tested elsewhere is not
repeated here; this list says where each one is tested.

Sizes and rates unchecked (refused at load, one line, no workdir made):
   1-7. train.num_steps=0, batch_size=0, eval_every=0, checkpoint_every=0, model.emb_dim=0,
        learning_rate=-1, keep_checkpoints=0
        -> test_validation::test_train_refuses_a_field_out_of_range_in_one_line
Hangs:
   8. ListOps smoke with data.max_length=16 -> (the same test)
   9. data listops --min-length 600 --max-length 500 -> test_listops_command_refuses_an_empty_length_range
  10. eval --length 10000000 on ListOps (generation) -> test_eval_at_an_impossible_length
  10b. the same on MQAR: XLA's out-of-memory traceback -> test_eval_out_of_memory_is_one_line
Data:
  11. a 0xFF byte in a ListOps TSV
      -> test_listops::test_reader_names_file_and_line_of_bad_bytes_and_refuses_empty_splits
  12. a header-only ListOps split, at load and at --check -> (the same test)
  13. bad bytes / rows in the other readers (retrieval, Pathfinder metadata and shards, CIFAR pickles),
      named as file:line or file -> test_readers_name_the_file_and_line
  14. an empty split in the other readers, at load and at --check -> test_readers_refuse_an_empty_split
Resume:
  15. a truncated newest checkpoint falls back
      -> test_validation::test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one
  16. an empty _METADATA in the newest checkpoint -> test_an_empty_metadata_file_falls_back
  17. a torn / garbage metrics.jsonl line -> test_validation::test_a_torn_metrics_line_is_dropped_and_named
Workdir lock:
  18. two trainers on one workdir
      -> test_validation::test_a_second_trainer_on_a_locked_workdir_exits_naming_the_holder
         (and test_validation::test_the_lock_of_a_killed_process_is_free)
Disk full:
  19. ENOSPC while saving a checkpoint -> test_a_full_disk_while_saving_stops_in_one_line
  19b. ENOSPC writing metrics.jsonl (any disk errno) -> test_a_disk_error_outside_a_checkpoint_is_one_line
CLI tracebacks:
  20. summarize on a missing / corrupt results.json -> test_validation::test_summarize_missing_or_corrupt_results
  21. compare --variants local,foo -> test_validation::test_compare_validates_every_run_before_training
  22. compare --seeds 0,x -> (the same test)
  23. bench --variants local,foo -> test_validation::test_bench_refuses_bad_arguments_before_any_worker
  24. --config README.md:local -> test_validation::test_a_config_that_is_not_a_python_file
API:
  25. a float additive key_mask (0 / -1e9) -> test_registry::test_apply_refuses_what_it_would_get_wrong
  26. a {1, -1} key_mask -> (the same test)
  27. int32 q, k, v -> (the same test)
  28. window=2.5 -> test_registry::test_typed_options_refuse_bad_values_in_one_line
NaN:
  29. NaN in one query through the fused CPU kernel
      -> test_flash_cpu::test_nan_and_inf_propagate_as_in_the_xla_engine, and conformance.check_nan
         for every variant and engine (test_conformance)
  30. NaN in one query of `linear`: dq kept finite entries (its normalizer cut the NaN); a row with
      no visible key stays 0 with finite gradients -> test_linear_propagates_a_nan_query_to_all_of_dq

Names without a file are in this one. 32 probes (1-7 count as seven); none is open.
"""
import errno
import os

import pytest

from attn_zoo import cli, configs, train
from test_validation import one_line_error  # tests/ is on sys.path under pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MQAR = "configs/mqar.py:blockwise,smoke"
SHORT = ["--config.train.num_steps=4", "--config.train.checkpoint_every=2", "--config.train.eval_every=2",
         "--config.train.keep_checkpoints=3"]


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the config specs are relative paths


# --- disk full (item 5) ------------------------------------------------------------------------

def test_a_full_disk_while_saving_stops_in_one_line(tmp_path, capsys, monkeypatch):
    """ENOSPC inside Orbax's write of checkpoint 4: one line naming it, the error and the last
    good checkpoint (2); no temporary directory left; exit 1; the same command then resumes."""
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as json_handler
    work = tmp_path / "w"
    write = json_handler.JsonCheckpointHandler._save_fn

    async def full_at_step_4(self, x, directory):
        if "/checkpoints/4" in str(directory):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "metadata"))
        return await write(self, x, directory)

    monkeypatch.setattr(json_handler.JsonCheckpointHandler, "_save_fn", full_at_step_4)
    assert cli.main(["train", "--config", MQAR, "--workdir", str(work), *SHORT]) == 1
    ckpts = work / "checkpoints"
    one_line_error(capsys, f"could not save checkpoint {ckpts}/4", "No space left on device",
                   f"Last good checkpoint: {ckpts}/2 (step 2)")
    assert sorted(os.listdir(ckpts)) == ["2"]  # no 4.orbax-checkpoint-tmp*, and 2 intact
    assert not (work / "results.json").exists()
    monkeypatch.setattr(json_handler.JsonCheckpointHandler, "_save_fn", write)  # space freed
    assert cli.main(["train", "--config", MQAR, "--workdir", str(work), *SHORT]) == 0
    assert "resuming from step 2" in capsys.readouterr().out


def test_a_disk_error_outside_a_checkpoint_is_one_line(tmp_path, capsys, monkeypatch):
    """A full disk elsewhere (the metrics log) is the machine's error, not a bug: one line."""
    from attn_zoo.train import metrics

    def full(self, event):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)

    monkeypatch.setattr(metrics.MetricsLog, "write", full)
    assert cli.main(["train", "--config", MQAR, "--workdir", str(tmp_path / "w"), *SHORT]) == 1
    one_line_error(capsys, "No space left on device", "metrics.jsonl")


# --- readers: file:line, empty splits (item 2) --------------------------------------------------

def _cfg(**kw):
    import ml_collections
    return ml_collections.ConfigDict(kw)


def _pathfinder_cfg(d):
    return _cfg(task="pathfinder", dir=str(d), resolution=32, difficulty="hard", generate=False)


def test_readers_name_the_file_and_line(tmp_path):
    import pickle

    import numpy as np

    from attn_zoo import data
    from attn_zoo.data import check, image, pathfinder_io, retrieval
    # retrieval: a bad label on line 2 (a 0xFF byte where the label is)
    retrieval.write_fixture(str(tmp_path / "aan"), rows=4)
    path = tmp_path / "aan" / retrieval.FILES["val"]
    rows = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(rows[0] + b"\xff" + rows[1][3:] + b"".join(rows[2:]))
    with pytest.raises(ValueError, match=rf"{retrieval.FILES['val']}:2: expected label 0 or 1"):
        data.load(_cfg(task="retrieval", dir=str(tmp_path / "aan"), max_length=32))
    assert f"{retrieval.FILES['val']}:2: expected label" in str(check.check("retrieval", str(tmp_path / "aan")))
    # Pathfinder's LRA metadata: a byte that is not UTF-8, as file:line with the byte and column
    lra = tmp_path / "lra"
    pathfinder_io.write_lra_fixture(str(lra), np.zeros((6, 32, 32), np.uint8), np.array([0, 1] * 3), per_file=3)
    with open(lra / "metadata" / "1.npy", "ab") as f:
        f.write(b"imgs/1 sample_\xff.png 9 1\n")
    for load in (lambda: data.load(_pathfinder_cfg(lra)), lambda: pathfinder_io.read_lra_metadata(str(lra))):
        with pytest.raises(ValueError, match=r"metadata/1.npy:4: not UTF-8 \(byte 0xff at column 15\)"):
            load()
    assert "metadata/1.npy:4: not UTF-8" in str(check.check("pathfinder", str(lra)))
    # Pathfinder's shards: a truncated shard and a damaged meta.json are named
    gen = tmp_path / "gen"
    pathfinder_io.generate(str(gen), resolution=32, difficulty="hard", count=12, seed=0, shard_size=6)
    shard = gen / "shard_00001.npz"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"shard_00001.npz: not a readable shard .*run the generation command"):
        data.load(_pathfinder_cfg(gen))
    assert "shard_00001.npz: not a readable shard" in str(check.check("pathfinder", str(gen)))
    (gen / "meta.json").write_text('{"count": 12,')
    with pytest.raises(ValueError, match=r"meta.json: not a Pathfinder meta.json \(JSONDecodeError"):
        data.load(_pathfinder_cfg(gen))
    # CIFAR-10: bytes that are not a pickle, whatever pickle raises on them
    image.write_fixture(str(tmp_path / "cifar"), per_batch=4)
    for junk in (b"not a pickle", b"\x80\x04\x95", b"cno_such_module\nx\n."):
        (tmp_path / "cifar" / "cifar-10-batches-py" / "data_batch_2").write_bytes(junk)
        with pytest.raises(ValueError, match="data_batch_2: not a CIFAR-10 python pickle"):
            data.load(_cfg(task="image", dir=str(tmp_path / "cifar"), max_length=1024, val_size=4))
    with open(tmp_path / "cifar" / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, f)
    with pytest.raises(ValueError, match="data_batch_2: holds no images"):
        data.load(_cfg(task="image", dir=str(tmp_path / "cifar"), max_length=1024, val_size=4))


def test_readers_refuse_an_empty_split(tmp_path):
    import numpy as np

    from attn_zoo import data
    from attn_zoo.data import check, image, pathfinder_io, retrieval, text
    # retrieval: an empty eval TSV, at load and at --check
    retrieval.write_fixture(str(tmp_path / "aan"), rows=4)
    (tmp_path / "aan" / retrieval.FILES["test"]).write_bytes(b"")
    with pytest.raises(ValueError, match=rf"{retrieval.FILES['test']}: no rows; every split needs at least one"):
        data.load(_cfg(task="retrieval", dir=str(tmp_path / "aan"), max_length=32))
    report = check.check("retrieval", str(tmp_path / "aan"))
    assert not report.ok and f"{retrieval.FILES['test']}: no rows" in str(report)
    # Pathfinder: 5 images leave val empty (80/10/10), at load and at --check; 6 do not
    lra = tmp_path / "lra"
    pathfinder_io.write_lra_fixture(str(lra), np.zeros((5, 32, 32), np.uint8), np.array([0, 1, 0, 1, 1]))
    with pytest.raises(ValueError, match="5 images leave the val split empty"):
        data.load(_pathfinder_cfg(lra))
    report = check.check("pathfinder", str(lra))
    assert not report.ok and "5 images leave the val split empty" in str(report)
    six = pathfinder_io.split_80_10_10(np.zeros((6, 1), np.uint8), np.zeros(6, np.uint8))
    assert [len(six[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    # IMDb: a holdout as large as train leaves train empty; CIFAR-10: val_size likewise
    text.write_fixture(str(tmp_path / "imdb"), per_folder=2)
    for holdout in (0, 4):
        with pytest.raises(ValueError, match=rf"config.data.holdout={holdout} is not allowed .* 1 <= holdout < 4"):
            data.load(_cfg(task="text", dir=str(tmp_path / "imdb"), max_length=32, validation="holdout",
                           holdout=holdout))
    image.write_fixture(str(tmp_path / "cifar"), per_batch=2)
    with pytest.raises(ValueError, match=r"config.data.val_size=10 is not allowed .* 1 <= val_size < 10"):
        data.load(_cfg(task="image", dir=str(tmp_path / "cifar"), max_length=1024, val_size=10))


# --- resume, hangs ----------------------------------------------------------------------------

def test_an_empty_metadata_file_falls_back(tmp_path, capsys):
    """An empty `_METADATA` in the newest checkpoint (once "Expecting value: line 1 column 1"):
    named in one line, and the previous checkpoint resumes the run to the end."""
    config = configs.load(MQAR, [*SHORT, "--config.train.num_steps=6"])
    work = str(tmp_path / "run")
    assert train.train_and_evaluate(config, work, stop_after_steps=4)["status"] == "interrupted"
    open(os.path.join(work, "checkpoints", "4", "state", "_METADATA"), "w").close()
    assert train.train_and_evaluate(config, work)["status"] == "done"
    out = capsys.readouterr().out
    assert "checkpoints/4 is unreadable (JSONDecodeError" in out and "resuming from step 2" in out


def test_listops_command_refuses_an_empty_length_range(tmp_path, capsys):
    """`attn-zoo data listops --min-length 600 --max-length 500` once searched forever."""
    out = tmp_path / "d"
    assert cli.main(["data", "listops", "--out", str(out), "--min-length", "600", "--max-length", "500"]) == 1
    one_line_error(capsys, "--max-length=500 with --min-length=600 leaves no length", "--max-length >= 602")
    assert not out.exists()


def test_eval_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    """`eval --length 10000000` on an MQAR run asked XLA for 32 GB after 80 s of data generation
    and printed its traceback; the allocation failure is replayed here (no 10M-token data)."""
    import jax

    from attn_zoo.train import loop
    work = str(tmp_path / "w")
    assert cli.main(["train", "--config", MQAR, "--workdir", work, "--config.train.num_steps=2"]) == 0

    def out_of_memory(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 32000000080 bytes.")

    monkeypatch.setattr(loop, "evaluate_split", out_of_memory)
    capsys.readouterr()
    assert cli.main(["eval", "--workdir", work, "--length", "64"]) == 1
    one_line_error(capsys, f"evaluating {work} at length 64 with batch size", "ran out of memory",
                   "Out of memory allocating 32000000080 bytes", "try a shorter --length")


def test_eval_at_an_impossible_length(tmp_path):
    """`eval --length 10000000` on the ListOps smoke run looped forever with no output: the data it
    evaluates on (data.at_length: the generator's min_length scaled to 1,250,000 tokens) must be
    made or refused within seconds. Run in a subprocess (numpy only), killed after 5 s."""
    import json
    import subprocess
    import sys

    from attn_zoo import data
    c = data.at_length(configs.load("configs/listops.py:local,smoke").data, 10_000_000)
    c.dir = str(tmp_path / "d")
    code = ("import json, sys, ml_collections\nfrom attn_zoo.data import listops\n"
            "try:\n    listops.load(ml_collections.ConfigDict(json.loads(sys.argv[1])))\n"
            "except ValueError as e:\n    print('refused:', e)\n")
    try:
        done = subprocess.run([sys.executable, "-c", code, json.dumps(c.to_dict())], cwd=ROOT, timeout=5,
                              capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        pytest.fail("ListOps data at length 10,000,000 was neither made nor refused within 5 s")
    assert done.returncode == 0 and done.stdout.startswith("refused: "), done.stdout + done.stderr


# --- NaN in kernel attention's normalizer (item 5 of the brief: the dq gap) -------------------

@pytest.mark.parametrize("causal", [False, True])
def test_linear_propagates_a_nan_query_to_all_of_dq(causal):
    """A NaN in q[0, 3, 1, 0]: every coordinate of dq[0, 3, 1] is NaN, as in dense attention
    (the normalizer den used to be `where(den > 0, den, 1)`, which turned a NaN den into 1);
    batch row 1 sees no key (all masked): its output is 0 and every gradient finite."""
    import jax
    import jax.numpy as jnp

    from attn_zoo import attention
    spec = attention.get("linear")
    q, k, v = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 8, 2, 4))
    mask = jnp.ones((2, 8), bool).at[1].set(False)
    f = jax.jit(lambda q, k, v: spec.apply({}, q, k, v, key_mask=mask, causal=causal))
    grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(f(q, k, v)), argnums=(0, 1, 2)))
    assert float(jnp.abs(f(q, k, v)[1]).max()) == 0.0
    assert all(bool(jnp.isfinite(g).all()) for g in grad(q, k, v))
    dq = grad(q.at[0, 3, 1, 0].set(jnp.nan), k, v)[0]
    assert not bool(jnp.isfinite(dq[0, 3, 1]).any()), dq[0, 3, 1]
