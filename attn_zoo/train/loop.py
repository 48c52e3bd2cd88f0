"""`train_and_evaluate(config, workdir)`: the training loop, resumable and interruptible.

Workdir: config.json, metrics.jsonl, checkpoints/ (last few), best/ (best validation),
results.json, .lock (held while a trainer runs in it: a second one is refused). Rerunning on
the same workdir resumes from the newest checkpoint; batches and dropout keys are pure functions
of (seed, step), so the result equals an uninterrupted run.
SIGINT/SIGTERM save a checkpoint and return; a non-finite loss stops with an error naming the
step (checkpoints are only written after every earlier step's loss was checked).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time

import jax
import ml_collections
from flax import nnx

from attn_zoo import attention, configs, data
from attn_zoo.models import Transformer
from attn_zoo.models.transformer import extra_tokens
from attn_zoo.bench.common import malloc_name
from attn_zoo.train import parallel, steps
from attn_zoo.train.checkpoint import Checkpoints
from attn_zoo.train.lock import WorkdirLocked, workdir_lock  # noqa: F401 (WorkdirLocked: re-exported)
from attn_zoo.train.metrics import MetricsLog, Progress, peak_memory_mb


def enable_compilation_cache(directory=None) -> str:
    """Turn on JAX's persistent compilation cache (default $ATTN_ZOO_JAX_CACHE or
    ~/.cache/attn_zoo/jax): the seeds and reruns of one config reuse its compiled steps."""
    directory = os.path.abspath(directory or os.environ.get("ATTN_ZOO_JAX_CACHE")
                                or os.path.expanduser("~/.cache/attn_zoo/jax"))
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return directory


def build(config, task, max_length=None):
    """(graphdef, state, tx) for `config` on `task`, state on the host's default device; the model
    takes inputs up to `max_length` tokens (default: the task's)."""
    model = Transformer(config.model, config.attention.to_dict(), vocab_size=task.vocab_size,
                        num_classes=task.num_classes, max_length=max_length or task.max_length,
                        rngs=nnx.Rngs(config.train.seed))
    tx = steps.optimizer(config.train)
    graphdef, state = steps.create_state(model, tx)
    return graphdef, state, tx


def evaluate_split(eval_step, state, split, batch_size, mesh) -> dict:
    """Mean loss and accuracy over every example of `split`."""
    totals = None
    for batch in data.eval_batches(split, batch_size):
        sums = eval_step(state, parallel.shard_batch(batch, mesh))
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    t = jax.device_get(totals)
    return {"loss": float(t["loss_sum"] / t["count"]), "accuracy": float(t["correct"] / t["count"]),
            "examples": int(t["count"])}


@contextlib.contextmanager
def _stop_on_signals():
    """Yields a dict whose 'signal' becomes the name of SIGINT/SIGTERM once one arrives."""
    received = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handle(signum, _frame):
        received["signal"] = signal.Signals(signum).name

    old = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in old.items():
            signal.signal(s, h)


PLUGINS_FILE = "plugins.json"  # the attention plugins a run used (module names or file paths)


def _write_config(config, workdir, progress):
    if jax.process_index() != 0:
        return
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old != new:
            progress.message(f"note: config differs from the one in {path}; resuming with the new one")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(new, f, indent=2)
    if attention.plugins.loaded():  # so that eval, compare and summarize can load them again
        with open(os.path.join(workdir, PLUGINS_FILE), "w", encoding="utf-8") as f:
            json.dump(attention.plugins.loaded(), f, indent=2)


def load_plugins(workdir) -> None:
    """Load the plugins a training run in `workdir` recorded (none recorded: nothing to do)."""
    path = os.path.join(workdir, PLUGINS_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            attention.plugins.load_all(json.load(f))


def train_and_evaluate(config, workdir, *, stop_after_steps=None) -> dict:
    """Train (or resume) in `workdir`; return results.json's dict, or {'status': 'interrupted', ...}.

    stop_after_steps: leave after this many steps in this call, checkpointed, as a preemption
    would (time-sliced jobs; the resume test).

    The config is checked first (`configs.check`: ValueError naming a field out of range). The
    workdir is locked for the call (`lock.workdir_lock`): while one trainer runs in it, another
    raises WorkdirLocked naming it; the OS frees the lock of a process that died.
    """
    t0 = time.time()
    configs.check(config)  # a config built or changed in code, not by configs.load, is checked too
    if config.train.multihost:
        jax.distributed.initialize()
    lead = jax.process_index() == 0  # multi-host: only the first host writes files and prints
    # exclusive while training: a second trainer on this workdir raises WorkdirLocked naming this
    # one (multi-host: the first host holds it for all); released on return, error or death
    with workdir_lock(workdir) if lead else contextlib.nullcontext():
        return _train_and_evaluate(config, workdir, stop_after_steps, t0, lead)


def _train_and_evaluate(config, workdir, stop_after_steps, t0, lead) -> dict:
    tc = config.train
    os.makedirs(workdir, exist_ok=True)
    progress = Progress(tc.num_steps, enabled=lead)
    _write_config(config, workdir, progress)
    task = data.load(config.data)
    mesh = parallel.data_mesh()
    parallel.check_batch(tc.batch_size, mesh)
    rep = parallel.replicated(mesh)
    graphdef, state, tx = build(config, task)
    num_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    state = jax.device_put(state, rep)
    ckpts, log = Checkpoints(workdir, tc.keep_checkpoints), MetricsLog(workdir, enabled=lead)
    meta = {"best_val_accuracy": -1.0, "best_step": -1}
    restored = ckpts.restore(state)
    if restored is not None:
        state, meta = restored
        start = int(jax.device_get(state["step"]))
        ckpts.drop_best_after(start)
        log.truncate_after(start)
        progress.message(f"resuming from step {start} in {workdir}")
        done = os.path.join(workdir, "results.json")
        if start >= tc.num_steps and os.path.exists(done):
            with open(done, encoding="utf-8") as f:
                return json.load(f)
    head = config.model.head
    train_step = jax.jit(steps.make_train_step(graphdef, tx, config, head), donate_argnums=0,
                         out_shardings=(rep, rep))
    eval_step = jax.jit(steps.make_eval_step(graphdef, head), out_shardings=rep)
    step = int(jax.device_get(state["step"]))
    pending, train_time, timed_steps, last = [], 0.0, 0, step
    with _stop_on_signals() as stop:
        while step < tc.num_steps:
            batch = data.train_batch(task.splits["train"], step, tc.batch_size, tc.seed)
            tick = time.time()
            state, m = train_step(state, parallel.shard_batch(batch, mesh))
            step += 1
            pending.append((step, m))
            leaving = (stop["signal"] is not None or step == tc.num_steps
                       or (stop_after_steps is not None and step - last >= stop_after_steps))
            do_eval = step % tc.eval_every == 0 or step == tc.num_steps
            do_ckpt = step % tc.checkpoint_every == 0 or leaving
            if step % tc.log_every == 0 or do_eval or do_ckpt or step == last + 1:
                values = _check_finite(pending, ckpts)  # waits for the steps: part of train time
                pending = []
            if step > last + 1:  # the first step in this process compiles: not timed
                train_time, timed_steps = train_time + time.time() - tick, timed_steps + 1
            if step % tc.log_every == 0 or step == tc.num_steps:
                sps = timed_steps / train_time if train_time else float("nan")
                event = {"step": step, "split": "train", **values, "steps_per_sec": sps}
                log.write(event)
                progress.update(step, {k: event[k] for k in ("loss", "accuracy", "learning_rate",
                                                              "steps_per_sec")})
            if do_eval:
                val = evaluate_split(eval_step, state, task.splits["val"], tc.batch_size, mesh)
                log.write({"step": step, "split": "val", **val})
                progress.message(f"step {step}: val loss {val['loss']:.4f} accuracy {val['accuracy']:.4f}")
                if val["accuracy"] > meta["best_val_accuracy"]:
                    meta = {"best_val_accuracy": val["accuracy"], "best_val_loss": val["loss"],
                            "best_step": step}
                    ckpts.save(state, meta, best=True)
            if do_ckpt:
                ckpts.save(state, meta)
            if leaving and step < tc.num_steps:
                why = stop["signal"] or f"stop_after_steps={stop_after_steps}"
                log.write({"step": step, "event": "interrupted", "reason": why})
                progress.message(f"stopped at step {step} ({why}); checkpoint saved; "
                                 f"run the same command again to resume")
                ckpts.close()
                log.close()
                return {"status": "interrupted", "step": step, "reason": why}
    best_state, best_meta = ckpts.restore(state, best=True)
    test = evaluate_split(eval_step, best_state, task.splits["test"], tc.batch_size, mesh)
    log.write({"step": best_meta["best_step"], "split": "test", **test})
    results = {
        "status": "done", "task": task.name, "attention": config.attention.name,
        "test_accuracy": test["accuracy"], "test_loss": test["loss"],
        "best_val_accuracy": best_meta["best_val_accuracy"], "best_step": best_meta["best_step"],
        "best_val_loss": best_meta.get("best_val_loss"),  # the sweep's selection score for LMs
        "num_steps": tc.num_steps, "num_params": int(num_params),
        "steps_per_sec": timed_steps / train_time if train_time else None,
        "peak_memory_mb": peak_memory_mb(), "wall_time_s": time.time() - t0, "malloc": malloc_name(),
        "cpu_time_s": time.process_time(),  # whole process, all threads: robust to a shared machine
        "devices": mesh.size,
    }
    test_split = task.splits["test"]
    if head == "lm" and test_split.labels.shape != test_split.inputs.shape:
        # next-token LM: nats per predicted token -> bits; byte-level tasks: bits per byte (tasks
        # with per-token labels, e.g. MQAR, are scored on a few positions: accuracy ranks them)
        results["test_bits_per_token"] = test["loss"] / math.log(2)
        if task.vocab_size == 256:
            results["test_bits_per_byte"] = results["test_bits_per_token"]
    results["metric"] = next((k for k in ("test_bits_per_byte", "test_bits_per_token") if k in results),
                             "test_accuracy")  # what leaderboards rank these runs by
    # chance_<metric>: the input-blind rate on the test split (majority target; unigram bits)
    chance = data.chance(test_split, head, task.vocab_size)
    results.update({f"chance_{k}": v for k, v in chance.items() if f"test_{k}" in results})
    if lead:
        with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    progress.message(f"test accuracy {test['accuracy']:.4f} (best val {meta['best_val_accuracy']:.4f} "
                     f"at step {meta['best_step']}); results in {workdir}/results.json")
    ckpts.close()
    log.close()
    return results


def _check_finite(pending, ckpts) -> dict:
    """Fetch pending step metrics; raise naming the first non-finite loss. Returns the newest."""
    for step, m in pending:
        values = {k: float(v) for k, v in jax.device_get(m).items()}
        if not math.isfinite(values["loss"]):
            good = ckpts.latest.latest_step()
            raise FloatingPointError(
                f"loss is {values['loss']} at step {step}; training stopped. Last good checkpoint: "
                f"{'none' if good is None else f'step {good}'} (in {ckpts.latest.directory}). "
                f"Try a lower train.learning_rate or train.grad_clip=1.0.")
    return values


def evaluate(workdir, split="test", checkpoint="best", length=None) -> dict:
    """Evaluate a workdir's best (or latest) checkpoint on one split, with its config.json.

    length: evaluate the trained parameters on inputs of `length` tokens instead (length
    extrapolation): the data config is moved to that length (`data.at_length`), the model rebuilt
    for it and the checkpoint restored into it (a shorter length keeps the trained model). ValueError
    when the task's length is fixed, an attention variant's length-sized parameters (its
    `spec.max_length` option) or learned positions are too short (these from the config alone,
    before any data is read), or any other parameter's shape depends on the length (before the
    checkpoint is read), or when the evaluation runs out of memory (one line, not XLA's traceback).
    The result is also appended to <workdir>/extrapolation.jsonl.
    """
    load_plugins(workdir)
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        config = ml_collections.ConfigDict(json.load(f))
    trained_length = config.data.get("max_length")
    if length is not None:
        length = int(length)
        config.data = data.at_length(config.data, length)  # refuses fixed-length tasks
        _check_length(config, trained_length, length)
    task = data.load(config.data)
    mesh = parallel.data_mesh()
    # Shorter than trained: keep the trained model (learned positions and length-sized parameters
    # are sliced to the input); longer: the model for the new length, whose shapes must match.
    model_length = None if length is None else max(length, trained_length)
    if length is not None and model_length != trained_length:
        _check_shapes(config, task, trained_length, model_length)
    graphdef, state, _ = build(config, task, model_length)
    ckpts = Checkpoints(workdir)
    restored = ckpts.restore(jax.device_put(state, parallel.replicated(mesh)), best=checkpoint == "best")
    ckpts.close()
    if restored is None:
        raise FileNotFoundError(f"no {checkpoint} checkpoint in {workdir}")
    eval_step = jax.jit(steps.make_eval_step(graphdef, config.model.head))
    try:
        result = evaluate_split(eval_step, restored[0], task.splits[split], config.train.batch_size, mesh)
    except jax.errors.JaxRuntimeError as e:  # out of memory: the machine's limit, said in one line
        if "RESOURCE_EXHAUSTED" not in str(e) and "Out of memory" not in str(e):
            raise
        at = "" if length is None else f" at length {length:,}"
        raise ValueError(f"evaluating {workdir}{at} with batch size {config.train.batch_size} ran out of "
                         f"memory ({' '.join(str(e).split())[:200]}); try a shorter --length") from None
    out = {"split": split, "checkpoint": checkpoint, "step": int(restored[0]["step"])}
    if length is None:
        return {**out, **result}
    out = {**out, "length": length, "trained_length": trained_length, "task": task.name,
           "attention": config.attention.name, **result}
    if config.model.head == "lm":
        out["bits_per_token"] = result["loss"] / math.log(2)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "extrapolation.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(out) + "\n")
    return out


def _check_length(config, trained_length, length):
    """Refuse, with the reason, a length the trained parameters cannot take (config only)."""
    extra = extra_tokens(config.model)
    need = length + extra
    plus = f" + {extra} CLS/global token{'s' * (extra > 1)}" if extra else ""
    for a in configs.layer_attention(config.model, config.attention):
        opts = dict(a)
        spec = attention.get(opts.pop("name"))
        limit = spec.length_limit(**opts)
        if limit is not None and limit < need:
            raise ValueError(
                f"attention '{spec.name}' is tied to a maximum length: its learned parameters were "
                f"built for attention.{spec.max_length}={limit} positions, and length {length}{plus} "
                f"needs {need}; train with --config.data.max_length={length} to evaluate there")
    if config.model.positions == "learned" and length > trained_length:
        raise ValueError(
            f"model.positions='learned': the trained position table has {trained_length + extra} rows "
            f"(data.max_length={trained_length}{plus}), and length {length} needs {need}; learned "
            f"positions do not extrapolate (sinusoidal, rope, alibi and nope do)")


def _check_shapes(config, task, trained_length, length):
    """Refuse when some parameter's shape depends on the model's length (tied to the trained one)."""
    def shapes(n):  # trained params and non-gradient state ("rest": e.g. fixed random blocks)
        def params_and_state():
            state = build(config, task, n)[1]
            return {"params": state["params"], "rest": state["rest"]}
        state = jax.eval_shape(params_and_state)
        return {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(state)[0]}

    old, new = shapes(trained_length), shapes(length)
    differ = [f"params{p} is {old[p]} at length {trained_length}, {new[p]} at {length}"
              for p in old if p in new and old[p] != new[p]]
    if differ or old.keys() != new.keys():
        raise ValueError(
            f"parameters whose shape depends on the input length tie this model to its training "
            f"length (data.max_length={trained_length}): {'; '.join(differ) or 'the parameter tree differs'}")
