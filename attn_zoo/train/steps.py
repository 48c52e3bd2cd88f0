"""Pure train and eval steps over `nnx.split` state, the optimizer and LRA's schedules.

The train state is a plain dict pytree {step, params, rest, opt} (rest = non-gradient model
state such as attention centroids); `graphdef` is static. A step's randomness is
fold_in(seed key, step), so a step is a pure function of (state, batch). A batch holding
"segment_ids" [B, N] (packed rows) passes them to the model.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx


def schedule(config):
    """Learning rate as a function of the update count t = 0, 1, ... (LRA's schedules)."""
    base, warmup, total = config.learning_rate, max(config.warmup_steps, 1), config.num_steps

    def rsqrt(count):  # base · min(1, t/warmup) · rsqrt(max(t, warmup)), t counted from 1
        t = count + 1.0
        return base * jnp.minimum(1.0, t / warmup) * jax.lax.rsqrt(jnp.maximum(t, warmup))

    if config.schedule == "rsqrt":
        return rsqrt
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, base, warmup, max(total, warmup + 1))
    if config.schedule == "constant":
        return lambda count: base * jnp.minimum(1.0, (count + 1.0) / warmup)
    raise ValueError(f"train.schedule must be 'rsqrt', 'cosine' or 'constant', got {config.schedule!r}")


def optimizer(config):
    """AdamW(0.9, 0.98, eps 1e-9) with decoupled weight decay; optional global-norm clipping."""
    adamw = optax.adamw(schedule(config), b1=0.9, b2=0.98, eps=1e-9, weight_decay=config.weight_decay)
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), adamw) if config.grad_clip > 0 else adamw


def create_state(model, tx):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, {"step": jnp.zeros((), jnp.int32), "params": params, "rest": rest,
                      "opt": tx.init(params)}


def loss_and_metrics(logits, batch, head):
    """Weighted cross-entropy sums: classifier/dual over examples; token over the positions whose
    label is >= 0 (labels [B, N]; -1 = not scored); lm over next tokens, or, when the task gives
    per-token labels (labels [B, N], the shape of inputs: MQAR), over the positions whose label
    is >= 0 as for token (labels[:, t] is the target of logits[:, t], already shifted). Packed
    rows (batch["segment_ids"]): a next token in another segment than its context is not scored."""
    per_token = head == "token" or (head == "lm" and batch["labels"].shape == batch["inputs"].shape)
    if per_token:
        labels = batch["labels"]
        weight = (labels >= 0) * batch["mask"] * batch["weight"][:, None]
        labels = jnp.maximum(labels, 0)
    elif head == "lm":
        logits, labels = logits[:, :-1], batch["inputs"][:, 1:]
        weight = batch["mask"][:, 1:] * batch["weight"][:, None]
        if "segment_ids" in batch:
            weight = weight * (batch["segment_ids"][:, 1:] == batch["segment_ids"][:, :-1])
    else:
        labels, weight = batch["labels"], batch["weight"]
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"loss_sum": (nll * weight).sum(), "correct": (correct * weight).sum(),
            "count": weight.sum().astype(jnp.float32)}


def make_train_step(graphdef, tx, config, head):
    """(state, batch) -> (state, metrics): one AdamW update; metrics are scalars."""
    lr = schedule(config.train)
    base_key = jax.random.key(config.train.seed)

    def train_step(state, batch):
        rng = jax.random.fold_in(base_key, state["step"])

        def loss_fn(params):
            model = nnx.merge(graphdef, params, state["rest"], copy=True)
            logits = model(batch["inputs"], batch["mask"], segment_ids=batch.get("segment_ids"),
                           rng=rng, train=True)
            sums = loss_and_metrics(logits, batch, head)
            _, _, rest = nnx.split(model, nnx.Param, ...)
            return sums["loss_sum"] / sums["count"], (sums, rest)

        (loss, (sums, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        new = {"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates),
               "rest": rest, "opt": opt}
        metrics = {"loss": loss, "accuracy": sums["correct"] / sums["count"],
                   "learning_rate": lr(state["step"]), "grad_norm": optax.tree.norm(grads)}
        return new, metrics

    return train_step


def make_eval_step(graphdef, head):
    """(state, batch) -> sums {loss_sum, correct, count} (no dropout, no state update)."""

    def eval_step(state, batch):
        model = nnx.merge(graphdef, state["params"], state["rest"])
        logits = model(batch["inputs"], batch["mask"], segment_ids=batch.get("segment_ids"), train=False)
        return loss_and_metrics(logits, batch, head)

    return eval_step
