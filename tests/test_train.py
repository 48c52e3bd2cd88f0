"""End to end: every variant trains; resume == uninterrupted; signals, NaN, 8 devices == 1; CLI."""
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import pytest

from attn_zoo import attention, cli, configs, train
from attn_zoo.data import listops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("listops")
    listops.generate(str(d), train=48, val=16, test=16, min_length=4, max_length=24, max_depth=10,
                     max_args=10, seed=0)
    return str(d)


def tiny_config(variant, data_dir, *overrides, options=None):
    """1 layer, dim 16, 2 heads, length 24 (+CLS), batch 8: seconds per variant on CPU."""
    base = ["--config.model.num_layers=1", "--config.model.emb_dim=16", "--config.model.qkv_dim=16",
            "--config.model.mlp_dim=16", "--config.model.num_heads=2", f"--config.data.dir={data_dir}",
            "--config.data.generate=false", "--config.data.max_length=24", "--config.train.batch_size=8",
            "--config.train.num_steps=2", "--config.train.eval_every=2", "--config.train.log_every=1",
            "--config.train.checkpoint_every=2"]
    c = configs.load(f"{os.path.join(ROOT, 'configs/listops.py')}:{variant},smoke", base + list(overrides))
    for k, v in (options or {}).items():
        c.attention[k] = v
    return c


def _events(workdir, split):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [e for e in map(json.loads, f) if e.get("split") == split]


@pytest.mark.parametrize("variant", attention.names())
def test_every_variant_trains_and_evaluates(variant, data_dir, tmp_path):
    spec = attention.get(variant)
    # The config ties a length-sized option (spec.max_length) to the data length: keep that one.
    options = {k: v for k, v in spec.test_options[0].items() if k != spec.max_length}
    result = train.train_and_evaluate(tiny_config(variant, data_dir, options=options), str(tmp_path))
    assert result["status"] == "done" and 0 <= result["test_accuracy"] <= 1
    assert result["num_params"] > 0 and result["best_step"] == 2
    assert [e["step"] for e in _events(str(tmp_path), "train")] == [1, 2]
    saved = json.load(open(tmp_path / "results.json"))
    assert saved["test_accuracy"] == result["test_accuracy"] and saved["peak_memory_mb"] > 0
    assert os.path.exists(tmp_path / "config.json")


@pytest.mark.parametrize("overrides", [
    ("--config.model.head=lm",),
    ("--config.model.dtype=bfloat16", "--config.train.grad_clip=1.0"),
    ("--config.model.pooling=mean", "--config.model.num_global_tokens=2", "--config.model.positions=learned",
     "--config.train.schedule=cosine"),
])
def test_model_and_optimizer_options_train(overrides, data_dir, tmp_path):
    result = train.train_and_evaluate(tiny_config("dense", data_dir, *overrides), str(tmp_path))
    assert result["status"] == "done" and math.isfinite(result["test_loss"])
    losses = [e["loss"] for e in _events(str(tmp_path), "train")]
    assert len(losses) == 2 and all(map(math.isfinite, losses))


def test_resume_matches_uninterrupted_run(data_dir, tmp_path):
    over = ["--config.train.num_steps=6", "--config.train.eval_every=2", "--config.train.checkpoint_every=4"]
    full = train.train_and_evaluate(tiny_config("dense", data_dir, *over), str(tmp_path / "full"))
    part = train.train_and_evaluate(tiny_config("dense", data_dir, *over), str(tmp_path / "resumed"),
                                    stop_after_steps=3)
    assert part == {"status": "interrupted", "step": 3, "reason": "stop_after_steps=3"}
    resumed = train.train_and_evaluate(tiny_config("dense", data_dir, *over), str(tmp_path / "resumed"))
    for k in ("test_accuracy", "test_loss", "best_val_accuracy", "best_step"):
        assert resumed[k] == full[k], k
    for split in ("train", "val", "test"):
        a, b = _events(str(tmp_path / "full"), split), _events(str(tmp_path / "resumed"), split)
        strip = lambda es: [{k: v for k, v in e.items() if k != "steps_per_sec"} for e in es]  # noqa: E731
        assert strip(a) == strip(b), split
    # a finished workdir just returns its results
    assert train.train_and_evaluate(tiny_config("dense", data_dir, *over), str(tmp_path / "full")) == full


def test_sigterm_saves_checkpoint_and_stops(data_dir, tmp_path):
    config = tiny_config("dense", data_dir, "--config.train.num_steps=1000000",
                         "--config.train.checkpoint_every=1000000", "--config.train.log_every=1000")
    def send_once_handled():  # SIGTERM before the loop's handler exists would kill pytest
        while signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_once_handled, daemon=True)
    sender.start()
    result = train.train_and_evaluate(config, str(tmp_path))
    sender.join()
    assert result["status"] == "interrupted" and result["reason"] == "SIGTERM"
    assert os.listdir(tmp_path / "checkpoints") == [str(result["step"])]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handler restored


def test_nan_loss_stops_naming_the_step(data_dir, tmp_path):
    config = tiny_config("dense", data_dir, "--config.train.num_steps=40", "--config.train.log_every=5",
                         "--config.train.checkpoint_every=1", "--config.train.eval_every=1000",
                         "--config.train.learning_rate=1e30", "--config.train.schedule=constant")
    with pytest.raises(FloatingPointError, match=r"loss is (nan|inf) at step (\d+)") as e:
        train.train_and_evaluate(config, str(tmp_path))
    bad = int(e.value.args[0].split("at step ")[1].split(";")[0])
    saved = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints"))
    assert saved and max(saved) < bad
    assert f"step {max(saved)}" in str(e.value)


_MULTI = """
import json, os, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, os.path.join({root!r}, "tests"))
import jax
jax.config.update("jax_compilation_cache_dir", {cache!r})
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
from attn_zoo import train
from test_train import tiny_config
assert jax.device_count() == 8, jax.devices()
c = tiny_config("local", {data!r}, "--config.train.num_steps=3", "--config.train.eval_every=3",
                "--config.train.checkpoint_every=3", options={{"window": 3, "block": 8}})
r = train.train_and_evaluate(c, {workdir!r})
print("RESULT", json.dumps(r))
"""


def test_eight_devices_match_one(data_dir, tmp_path):
    one = train.train_and_evaluate(
        tiny_config("local", data_dir, "--config.train.num_steps=3", "--config.train.eval_every=3",
                    "--config.train.checkpoint_every=3", options={"window": 3, "block": 8}), str(tmp_path / "one"))
    # conftest's XLA flags (unoptimized LLVM: half the compile time) and compilation cache too
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    script = _MULTI.format(root=ROOT, data=data_dir, workdir=str(tmp_path / "eight"),
                           cache=jax.config.jax_compilation_cache_dir)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    eight = json.loads(proc.stdout.split("RESULT ")[1])
    assert eight["devices"] == 8 and one["devices"] == 1
    losses = lambda w: [e["loss"] for e in _events(str(tmp_path / w), "train")]  # noqa: E731
    assert losses("eight") == pytest.approx(losses("one"), rel=1e-5, abs=1e-6)
    assert eight["test_loss"] == pytest.approx(one["test_loss"], rel=1e-5)


def test_cli_train_eval_data(data_dir, tmp_path, capsys):
    assert cli.main(["data", "listops", "--out", str(tmp_path / "d"), "--train", "8", "--val", "2",
                     "--test", "2", "--max-length", "20", "--min-length", "3"]) == 0
    assert sorted(os.listdir(tmp_path / "d")) == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]
    workdir = str(tmp_path / "w")
    args = ["train", "--config", os.path.join(ROOT, "configs/listops.py:dense,smoke"), "--workdir", workdir,
            "--config.model.num_layers=1", "--config.model.emb_dim=16", "--config.model.qkv_dim=16",
            "--config.model.mlp_dim=16", f"--config.data.dir={data_dir}", "--config.data.generate=false",
            "--config.data.max_length=24", "--config.train.batch_size=8", "--config.train.num_steps=2"]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--workdir", workdir, "--split", "val"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["split"] == "val" and evaluated["examples"] == 16 and evaluated["step"] == 2
    assert cli.main(args + ["--config.train.num_step=3"]) == 1
    assert "unknown config field 'config.train.num_step'" in capsys.readouterr().err


def test_summary_table_and_plot(tmp_path):
    from attn_zoo.train import summary
    for name, acc in [("dense", 0.5), ("local", 0.25)]:
        w = tmp_path / name
        w.mkdir()
        (w / "results.json").write_text(json.dumps({"attention": name, "test_accuracy": acc, "num_steps": 4}))
        (w / "config.json").write_text(json.dumps({"attention": {"name": name}}))
        (w / "metrics.jsonl").write_text(json.dumps({"step": 2, "split": "val", "accuracy": acc}) + "\n")
    dirs = [str(tmp_path / "dense"), str(tmp_path / "local")]
    table = summary.markdown_table(summary.load(dirs)).splitlines()
    assert table[0].startswith("| variant | test acc |") and len(table) == 4
    assert table[2].startswith("| dense | 0.5000 |") and table[3].startswith("| local | 0.2500 |")
    summary.plot_validation(dirs, str(tmp_path / "val.png"))
    assert (tmp_path / "val.png").stat().st_size > 1000
    with pytest.raises(FileNotFoundError, match="has `attn-zoo train --workdir"):
        summary.load([str(tmp_path / "missing")])


@pytest.mark.parametrize("allocator", ["auto", "system"])
def test_train_command_runs_under_the_chosen_malloc(tmp_path, allocator):
    """The console script re-executes itself under tcmalloc/jemalloc when installed (auto), and
    under glibc's malloc with --allocator system; results.json says which ran."""
    import json
    import shutil
    import subprocess

    from attn_zoo.bench.common import malloc_preload
    exe = shutil.which("attn-zoo")
    if exe is None:
        pytest.skip("the attn-zoo console script is not installed")
    workdir = tmp_path / "w"
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ATTN_ZOO_MALLOC_EXEC")}
    res = subprocess.run([exe, "train", "--allocator", allocator, "--config",
                          os.path.join(ROOT, "configs/recall.py:local,smoke"), "--workdir", str(workdir)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    with open(workdir / "results.json", encoding="utf-8") as f:
        assert json.load(f)["malloc"] == malloc_preload(allocator)[0]
