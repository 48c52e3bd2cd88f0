"""Sample text from a trained byte LM workdir (`attn-zoo generate`), decoding token by token.

The workdir's config.json rebuilds the model (no data is read: a byte LM's vocabulary is the 256
byte values, as `data/bytelm.py` encodes text), its best checkpoint (else its latest) is restored,
the prompt's UTF-8 bytes are fed one by one through `models.decode` (prefill), then N bytes are
sampled: temperature 0 takes the most likely byte, T > 0 samples from softmax(logits / T) with
keys from `seed`. The prompt and the samples together may not exceed the model's max length
(data.max_length): a decoder's cache is sized to it.
"""
from __future__ import annotations

import json
import os
import time
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from attn_zoo.data.text import VOCAB_SIZE
from attn_zoo.models import decode
from attn_zoo.train import loop
from attn_zoo.train.checkpoint import Checkpoints


def load_model(workdir):
    """(model, config, step) of a byte-LM workdir's best checkpoint, or its latest if none is best."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{workdir} holds no config.json: not a training workdir "
                                f"(attn-zoo train --workdir {workdir} makes one)")
    with open(path, encoding="utf-8") as f:
        config = ml_collections.ConfigDict(json.load(f))
    if config.data.get("task") != "bytelm" or config.model.get("head") != "lm":
        raise ValueError(f"{workdir} is not a byte LM workdir (data.task={config.data.get('task')!r}, "
                         f"model.head={config.model.get('head')!r}); generate needs data.task='bytelm'")
    loop.load_plugins(workdir)
    task = types.SimpleNamespace(vocab_size=VOCAB_SIZE, num_classes=VOCAB_SIZE,
                                 max_length=config.data.max_length)
    graphdef, state, _ = loop.build(config, task)
    ckpts = Checkpoints(workdir)
    try:
        restored = ckpts.restore(state, best=True) or ckpts.restore(state, best=False)
    finally:
        ckpts.close()
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {workdir}/best or {workdir}/checkpoints: train first")
    state = restored[0]
    return nnx.merge(graphdef, state["params"], state["rest"]), config, int(state["step"])


def generate(workdir, prompt: str, tokens: int, *, temperature=0.0, seed=0) -> dict:
    """{'prompt', 'ids' (the sampled bytes), 'text' (them as UTF-8, invalid bytes replaced), 'tokens',
    'tokens_per_s' (sampling, after the first compiled step), 'prefill_s', 'step', 'attention'}."""
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"--tokens {tokens} is not allowed; allowed: an integer >= 1")
    if not temperature >= 0:
        raise ValueError(f"--temperature {temperature} is not allowed; allowed: >= 0 (0: greedy)")
    ids = list(prompt.encode("utf-8"))
    if not ids:
        raise ValueError("--prompt is empty; give at least one character to continue from")
    model, config, step = load_model(workdir)
    length = config.data.max_length
    if len(ids) + tokens > length:
        raise ValueError(f"the prompt ({len(ids)} bytes) plus --tokens {tokens} is {len(ids) + tokens} "
                         f"bytes, more than the model's max length {length} (data.max_length)")
    run = decode.jitted(model)
    cache = decode.init_cache(model, 1, len(ids) + tokens)
    start = time.perf_counter()
    for t in ids:
        logits, cache = run(cache, jnp.asarray([t], jnp.int32))
    logits.block_until_ready()
    prefill_s = time.perf_counter() - start
    key, out = jax.random.key(seed), []
    start = None
    for i in range(tokens):
        if i == 1:  # time the steps after the first (which may still compile), and sampling
            start = time.perf_counter()
        if temperature == 0:
            nxt = jnp.argmax(logits, axis=-1)
        else:
            nxt = jax.random.categorical(jax.random.fold_in(key, i), logits / temperature, axis=-1)
        out.append(int(nxt[0]))
        logits, cache = run(cache, nxt.astype(jnp.int32))  # the last one fills position P + N − 1
    logits.block_until_ready()
    elapsed = time.perf_counter() - start if start is not None else float("nan")
    return {"prompt": prompt, "ids": out, "text": bytes(np.asarray(out, np.uint8)).decode("utf-8", errors="replace"),
            "tokens": tokens, "tokens_per_s": (tokens - 1) / elapsed if tokens > 1 else float("nan"),
            "prefill_s": prefill_s, "step": step, "attention": config.attention.name}
