"""User errors fail in one line, before anything is touched: config fields out of range (checked at
load), a workdir another trainer holds (its lock), and the CLI's inputs (variants, seeds, grid,
files), each replayed from a probe that once ran on, looped, crashed late or wrote a traceback."""
import importlib.util
import json
import os
import signal
import subprocess
import sys

import pytest

from attn_zoo import cli, configs, train
from attn_zoo.data import listops
from attn_zoo.train.lock import WorkdirLocked, describe_holder, workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTOPS = "configs/listops.py:local,smoke"
MQAR = "configs/mqar.py:blockwise,smoke"


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the config specs are relative paths


@pytest.fixture
def no_training(monkeypatch):
    """Replace the trainer: the list of workdirs it was asked to train (none, for a refused command)."""
    calls = []
    monkeypatch.setattr(train, "train_and_evaluate", lambda config, workdir, **kw: calls.append(workdir))
    return calls


def one_line_error(capsys, *needles) -> str:
    """The command's stderr is exactly one 'error: ...' line containing every needle."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# --- 1. every ranged config field is checked at load, before data, model or workdir -------------

@pytest.mark.parametrize("override,needle,allowed", [
    ("train.num_steps=0", "config.train.num_steps=0", ">= 1"),
    ("train.batch_size=0", "config.train.batch_size=0", ">= 1"),
    ("train.eval_every=0", "config.train.eval_every=0", ">= 1"),
    ("train.log_every=0", "config.train.log_every=0", ">= 1"),
    ("train.checkpoint_every=0", "config.train.checkpoint_every=0", ">= 1"),
    ("train.keep_checkpoints=0", "config.train.keep_checkpoints=0", ">= 1"),
    ("train.learning_rate=-1", "config.train.learning_rate=-1", "> 0"),
    ("train.learning_rate=nan", "config.train.learning_rate=nan", "finite"),
    ("train.warmup_steps=-1", "config.train.warmup_steps=-1", ">= 0"),
    ("train.weight_decay=-0.1", "config.train.weight_decay=-0.1", ">= 0"),
    ("train.grad_clip=-1", "config.train.grad_clip=-1", ">= 0"),
    ("train.schedule=linear", "config.train.schedule='linear'", "'cosine'"),
    ("model.num_layers=0", "config.model.num_layers=0", ">= 1"),
    ("model.emb_dim=0", "config.model.emb_dim=0", ">= 1"),
    ("model.qkv_dim=0", "config.model.qkv_dim=0", ">= 1"),
    ("model.mlp_dim=0", "config.model.mlp_dim=0", ">= 1"),
    ("model.num_heads=0", "config.model.num_heads=0", ">= 1"),
    ("model.num_heads=3", "config.model.qkv_dim=32", "multiple of num_heads"),
    ("model.dropout=1.0", "config.model.dropout=1.0", "[0, 1)"),
    ("model.attention_dropout=-0.1", "config.model.attention_dropout=-0.1", "[0, 1)"),
    ("model.head=regression", "config.model.head='regression'", "'classifier'"),
    ("model.layer_attention=local,dense,local", "3 entries", "num_layers=2"),
    ("data.max_length=0", "config.data.max_length=0", ">= 1"),
    # the ListOps generator keeps lengths min_length < L < max_length: 16 < L < 16 never ends
    ("data.max_length=16", "config.data.max_length=16", "config.data.max_length >= 18"),
    ("data.generator.max_depth=2", "config.data.generator.min_length=16", "longest has 12"),
    ("data.generator.val=0", "config.data.generator.val=0", ">= 1"),
])
def test_train_refuses_a_field_out_of_range_in_one_line(override, needle, allowed, tmp_path, capsys):
    workdir = tmp_path / "w"
    rc = cli.main(["train", "--config", LISTOPS, "--workdir", str(workdir), f"--config.{override}"])
    assert rc == 1
    one_line_error(capsys, needle, allowed)
    assert not workdir.exists()  # refused before the workdir (or data, or a model) was made


@pytest.mark.parametrize("override,needle", [
    ("data.num_kv_pairs=0", "config.data.num_kv_pairs=0"),
    ("data.num_kv_pairs=9", "data.num_kv_pairs=9"),  # 4·N tokens do not fit in L = 32
    ("data.val_size=0", "config.data.val_size=0"),
    ("model.short_conv=-1", "config.model.short_conv=-1"),
])
def test_task_fields_are_checked_where_the_task_has_them(override, needle):
    with pytest.raises(ValueError) as e:
        configs.load(MQAR, [f"--config.{override}"])
    assert needle in str(e.value) and "allowed" in str(e.value)


def test_fields_a_config_lacks_are_skipped_and_every_shipped_preset_passes():
    for name in sorted(os.listdir("configs")):
        spec = importlib.util.spec_from_file_location("task_config", os.path.join("configs", name))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for preset in ["", *module.PRESETS]:
            configs.load(f"configs/{name}:{','.join(['dense', preset]).rstrip(',')}")


def test_a_config_changed_in_code_is_checked_by_the_trainer(tmp_path):
    config = configs.load(MQAR)
    config.train.num_steps = 0
    with pytest.raises(ValueError, match=r"config\.train\.num_steps=0 is not allowed"):
        train.train_and_evaluate(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def _lengths_by_enumeration(max_depth, max_args, below):
    """The lengths _tree can make, by the slow set recursion (the reference for the bitmask)."""
    reach = {1}
    for _ in range(max_depth - 1):
        sums, children = set(), set(reach)
        for _ in range(2, max_args + 1):
            children = {a + b for a in children for b in reach if a + b < below}
            sums |= children
        reach = {1} | {2 + s for s in sums if 2 + s < below}
    return {n for n in reach if n < below}


@pytest.mark.parametrize("max_depth,max_args", [(1, 2), (2, 2), (3, 2), (4, 2), (3, 3), (2, 10), (5, 3)])
def test_listops_lengths_bitmask_matches_enumeration(max_depth, max_args):
    mask = listops.lengths_below(max_depth, max_args, 64)
    assert {n for n in range(64) if mask >> n & 1} == _lengths_by_enumeration(max_depth, max_args, 64)


def test_listops_generator_refuses_settings_it_could_never_meet(tmp_path, capsys):
    with pytest.raises(ValueError, match="leaves no length"):
        listops.generate(str(tmp_path), train=4, val=1, test=1, min_length=16, max_length=17,
                         max_depth=10, max_args=10, seed=0)
    with pytest.raises(ValueError, match="only 10 have"):  # only digits fit: 10 distinct expressions
        listops.generate(str(tmp_path), train=20, val=1, test=1, min_length=0, max_length=3,
                         max_depth=10, max_args=10, seed=0)
    assert listops.generate(str(tmp_path), train=4, val=1, test=1, min_length=0, max_length=3,
                            max_depth=10, max_args=10, seed=0)["train"] == 4
    assert cli.main(["data", "listops", "--out", str(tmp_path / "d"), "--min-length", "16",
                     "--max-length", "16"]) == 1
    one_line_error(capsys, "--max-length=16", "--min-length=16")
    assert not (tmp_path / "d").exists()


# --- 4. one trainer per workdir ----------------------------------------------------------------

def test_a_second_trainer_on_a_locked_workdir_exits_naming_the_holder(tmp_path, capsys):
    workdir = str(tmp_path / "w")
    with workdir_lock(workdir):
        assert f"pid {os.getpid()} on " in describe_holder(workdir)
        with pytest.raises(WorkdirLocked, match=f"pid {os.getpid()} "):  # another open file, same process
            with workdir_lock(workdir):
                pass
        rc = cli.main(["train", "--config", MQAR, "--workdir", workdir])
        assert rc == 1
        one_line_error(capsys, f"workdir {workdir} is locked by another trainer", f"pid {os.getpid()} on ")
        assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))
    assert describe_holder(workdir) == "unknown"  # released, its text cleared
    assert cli.main(["train", "--config", MQAR, "--workdir", workdir]) == 0
    assert json.load(open(os.path.join(workdir, "results.json")))["status"] == "done"
    with workdir_lock(workdir):  # the trainer released it on return
        pass


def test_the_lock_of_a_killed_process_is_free(tmp_path):
    workdir = str(tmp_path / "w")
    lock_py = os.path.join(ROOT, "attn_zoo", "train", "lock.py")  # loaded alone: no jax to import
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import importlib.util, sys, time\n"
         f"spec = importlib.util.spec_from_file_location('lock', {lock_py!r})\n"
         "lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)\n"
         f"with lock.workdir_lock({workdir!r}):\n"
         "    print('held', flush=True); time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkdirLocked, match=f"pid {holder.pid} on "):
            with workdir_lock(workdir):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)  # no finally of its own runs: the OS drops its flock
        holder.wait()
    assert f"pid {holder.pid}" in describe_holder(workdir)  # the dead holder's text is still there
    with workdir_lock(workdir):
        assert f"pid {os.getpid()} on " in describe_holder(workdir)


# --- 6. every command: a user error is one line and exit 1, before anything trains ------------

def test_summarize_missing_or_corrupt_results(tmp_path, capsys):
    assert cli.main(["summarize", str(tmp_path / "nope")]) == 1
    one_line_error(capsys, "nope: no such directory")
    assert cli.main(["summarize", str(tmp_path)]) == 1
    one_line_error(capsys, "no finished runs")
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text('{"test_accuracy": 0.5')
    assert cli.main(["summarize", str(tmp_path)]) == 1
    one_line_error(capsys, f"{run / 'results.json'}: not valid JSON")
    (run / "results.json").write_text('{"test_accuracy": 0.5}')
    assert cli.main(["summarize", str(tmp_path)]) == 1
    one_line_error(capsys, f"{run / 'config.json'}: no such file")
    (run / "config.json").write_text("[]")
    assert cli.main(["summarize", str(tmp_path)]) == 1
    one_line_error(capsys, "config.json: holds a JSON list")


def test_summarize_a_corrupt_sweep_record(tmp_path, capsys):
    (tmp_path / f"dense-{'0' * 16}.json").write_text("{")
    assert cli.main(["summarize", str(tmp_path)]) == 1
    one_line_error(capsys, f"dense-{'0' * 16}.json: not valid JSON")
    (tmp_path / f"dense-{'0' * 16}.json").write_text('{"key": "x"}')
    assert cli.main(["summarize", str(tmp_path)]) == 1
    one_line_error(capsys, "not a sweep record (no variant")


@pytest.mark.parametrize("args,needles", [
    (["--variants", "local,foo"], ["unknown attention 'foo'", "known: "]),
    (["--variants", "local", "--seeds", "0,x"], ["--seeds '0,x'", "'x' is not an integer"]),
    (["--variants", "local", "--seeds", ","], ["--seeds"]),
    (["--variants", "local", "--config.train.num_steps=0"], ["config.train.num_steps=0"]),
    (["--variants", "local", "--config.train.num_step=3"], ["config.train.num_step", "num_steps"]),
])
def test_compare_validates_every_run_before_training(args, needles, tmp_path, capsys, no_training):
    rc = cli.main(["compare", "--config", "configs/listops.py:smoke", "--workdir", str(tmp_path), *args])
    assert rc == 1
    one_line_error(capsys, *needles)
    assert no_training == []  # 'local' was not trained before 'foo' failed


@pytest.mark.parametrize("args,needles", [
    (["--variants", "blockwise,foo"], ["unknown attention 'foo'"]),
    (["--variants", "blockwise", "--seeds", "0,x"], ["--seeds '0,x'"]),
    (["--variants", "blockwise", "--grid", "train.learning_rate=1e-3,x"], ["cannot parse 'x'", "learning_rate"]),
    (["--variants", "blockwise", "--grid", "train.learning_rate=1e-3,-1"], ["config.train.learning_rate=-1"]),
    (["--variants", "blockwise", "--grid", "train.learning_rat=1e-3"], ["config.train.learning_rat"]),
    (["--variants", "blockwise", "--grid", "train.learning_rate"], ["expected field=v1,v2"]),
    (["--variants", "blockwise", "--shard", "1/x"], ["--shard '1/x'"]),
    (["--variants", "blockwise", "--shard", "2/2"], ["--shard '2/2'"]),
])
def test_sweep_validates_variants_grid_and_seeds_before_training(args, needles, tmp_path, capsys, no_training):
    rc = cli.main(["sweep", "--config", "configs/mqar.py:smoke", "--workdir", str(tmp_path), *args])
    assert rc == 1
    one_line_error(capsys, *needles)
    assert no_training == []


@pytest.mark.parametrize("command", ["train", "compare", "sweep"])
def test_a_config_that_is_not_a_python_file(command, tmp_path, capsys, no_training):
    spec = "README.md:local" if command == "train" else "README.md"
    extra = ["--variants", "local"] if command != "train" else []
    assert cli.main([command, "--config", spec, "--workdir", str(tmp_path), *extra]) == 1
    one_line_error(capsys, "README.md is not a Python file")
    assert cli.main([command, "--config", "configs/nope.py" + (":local" if command == "train" else ""),
                     "--workdir", str(tmp_path), *extra]) == 1
    one_line_error(capsys, "config file not found: configs/nope.py")


@pytest.mark.parametrize("args,needles", [
    (["--variants", "local,foo"], ["unknown attention 'foo'"]),
    (["--lengths", "1024,x"], ["--lengths '1024,x'"]),
    (["--lengths", "0"], ["--lengths '0'", ">= 1"]),
    (["--batch", "0"], ["--batch 0"]),
    (["--baselines", "xla,nonesuch"], ["unknown baseline 'nonesuch'"]),
    (["--mode", "train-step", "--config", "configs/nope.py"], ["configs/nope.py"]),
])
def test_bench_refuses_bad_arguments_before_any_worker(args, needles, tmp_path, capsys, monkeypatch):
    from attn_zoo.bench import run as bench
    monkeypatch.setattr(bench, "main", lambda a: pytest.fail("bench started"))
    assert cli.main(["bench", "--out", str(tmp_path), *args]) == 1
    one_line_error(capsys, *needles)


def test_eval_outside_a_workdir(tmp_path, capsys):
    assert cli.main(["eval", "--workdir", str(tmp_path)]) == 1
    one_line_error(capsys, "holds no config.json")


def test_internal_errors_keep_their_traceback(tmp_path, monkeypatch):
    def broken(config, workdir, **kw):
        raise ZeroDivisionError("a bug, not a user error")

    monkeypatch.setattr(train, "train_and_evaluate", broken)
    with pytest.raises(ZeroDivisionError):
        cli.main(["train", "--config", MQAR, "--workdir", str(tmp_path)])
    monkeypatch.setenv("ATTN_ZOO_TRACEBACK", "1")  # and user errors show theirs when asked
    with pytest.raises(ValueError, match="num_steps=0"):
        cli.main(["train", "--config", MQAR, "--workdir", str(tmp_path), "--config.train.num_steps=0"])


def test_a_torn_metrics_line_is_dropped_and_named(tmp_path):
    from attn_zoo.train.metrics import MetricsLog, read
    log = MetricsLog(str(tmp_path), tensorboard=False)
    log.write({"step": 1, "loss": 1.0})
    log.write({"step": 2, "loss": 0.5})
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 3, "lo')  # a kill in the middle of a write
    said = []
    log.truncate_after(2, warn=said.append)
    assert [e["step"] for e in read(str(tmp_path))] == [1, 2]
    assert len(said) == 1 and "metrics.jsonl:3: not a metrics event" in said[0]


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    import pathlib

    from attn_zoo import configs, train
    over = ["--config.train.num_steps=6", "--config.train.checkpoint_every=2",
            "--config.train.keep_checkpoints=3", "--config.train.eval_every=2"]
    config = configs.load("configs/mqar.py:blockwise,smoke", over)
    work = str(tmp_path / "run")
    assert train.train_and_evaluate(config, work, stop_after_steps=4)["status"] == "interrupted"
    newest = pathlib.Path(work, "checkpoints", "4")
    for f in newest.rglob("*"):
        if f.is_file():
            f.write_bytes(b"")  # truncated by a crash or a full disk
    result = train.train_and_evaluate(config, work)
    out = capsys.readouterr().out
    assert result["status"] == "done"
    assert "checkpoints/4 is unreadable" in out and "resuming from step 2" in out
