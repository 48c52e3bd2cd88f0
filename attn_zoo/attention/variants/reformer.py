"""`reformer`: shared-QK angular-LSH attention (Kitaev et al. 2020).

Shared QK: keys are the L2-normalized queries, k_j = q_j / ‖q_j‖, so the passed `k` is ignored
(it only fixes shapes); a token's hash decides both where it asks and where it is found, which
is what makes one sort serve queries and keys alike. `key_mask` still decides which tokens may be
attended. Per round (n_hashes rounds), a token's bucket is argmax([x R; −x R]) for x = q/‖q‖ and
random rotations R [D, n_buckets/2]; tokens are sorted by (bucket, position) and cut into chunks of
`chunk`; a query sees its own and the previous chunk, the first chunk's previous being the last
(wrap=True, the paper's form as trax and reformer-pytorch roll it); logits q·k/√D; a token attends
to itself only when it sees nothing else. Rounds combine by log-sum-exp with each (query, key) pair counted once.
Padded tokens go to a bucket of their own, after every real one, so they never move a real token's
chunk. Causal: a query sees the `chunk` most recent real tokens j <= i of its own bucket (chunk
membership after a sort shifts when a later token changes bucket: a leak), computed on tiles of
the bucket-sorted stream (`bucketing.causal_window_attention`). O(N·chunk) time and memory.

Rotations: params["rotations"] [H, D, n_hashes, n_buckets/2] (a fresh draw per layer from init,
declared non-gradient state, never updated); with rehash=True and an rng (training), a fresh draw per call.

wrap=False drops the wrapped look-back: the first chunk starts the sort's first bucket, so the
last chunk's keys are ones the hashing put in other buckets (or padding, masked); without them no
query sees a pair its hashes judged unrelated. With one chunk (chunk >= L) both forms are the same.
The causal form has no chunks (above), so wrap does not apply to it.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from attn_zoo.attention.core import bucketing as bk
from attn_zoo.attention.core import decode
from attn_zoo.attention.core import lse
from attn_zoo.attention.core import masks
from attn_zoo.attention.core.options import option
from attn_zoo.attention.core.registry import register

F32 = jnp.float32
@dataclasses.dataclass(frozen=True)
class Options:
    n_hashes: int = option(2, "hashing rounds", min=1)
    n_buckets: int = option(32, "buckets per round (1 or even)", min=1)
    chunk: int = option(64, "chunk of the sorted stream a query attends (plus the previous one)", min=1)
    rehash: bool = option(False, "draw new rotations from rng on every training call")
    wrap: bool = option(True, "non-causal: the first chunk looks back to the last (the paper's code); "
                              "False: it does not look back")

    def check(self):
        if self.n_buckets > 1 and self.n_buckets % 2:
            raise ValueError(f"n_buckets={self.n_buckets} must be 1 or even")


def random_rotations(rng, H, D, n_hashes, n_buckets):
    return jax.random.normal(rng, (H, D, n_hashes, max(n_buckets // 2, 1)), F32)


def init(rng, q, k, v, *, n_hashes, n_buckets, **_):
    return {"rotations": random_rotations(rng, q.shape[2], q.shape[3], n_hashes, n_buckets)}


def _normalize(x):
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


def _plan(params, q, key_mask, rng, *, causal, n_hashes, n_buckets, chunk, rehash):
    """Heads-first padded tensors and the sorts of every round.

    Returns (qh [B, H, Np, D], kh = normalized qh, valid [B, 1, Np], plan, c) with Np a multiple
    of the chunk c; plan holds int [R, B, H, Np] sorts (see `bucketing`).
    """
    B, L, H, D = q.shape
    c = min(chunk, L)
    pad = (-L) % c
    qh = jnp.pad(bk.heads_first(q), ((0, 0), (0, 0), (0, pad), (0, 0)))
    kh = _normalize(qh)
    valid = jnp.ones((B, L), bool) if key_mask is None else key_mask
    valid = jnp.pad(valid, ((0, 0), (0, pad)))[:, None, :]  # padding is invalid
    if rehash and rng is not None:
        rot = random_rotations(rng, H, D, n_hashes, n_buckets)
    else:
        rot = params["rotations"]
        if rot.shape != (H, D, n_hashes, max(n_buckets // 2, 1)):
            raise ValueError(f"reformer: params['rotations'] is {rot.shape}, expected "
                             f"{(H, D, n_hashes, max(n_buckets // 2, 1))}")
    rot = jax.lax.stop_gradient(rot)
    if n_buckets == 1:
        hashes = jnp.zeros((n_hashes, B, H, L + pad), jnp.int32)
    else:
        proj = jnp.einsum("bhnd,hdrk->rbhnk", jax.lax.stop_gradient(kh), rot)
        hashes = jnp.argmax(jnp.concatenate([proj, -proj], axis=-1), axis=-1).astype(jnp.int32)
    kbuckets = jnp.where(valid[None], hashes, n_buckets)  # padding: a bucket of its own, last
    if causal:
        plan = bk.causal_plan(hashes, kbuckets)
    else:
        perm, spos = bk.sort_by_bucket(kbuckets)
        plan = dict(perm=perm, spos=spos)
    return qh, kh, valid, plan, c


def attention(params, q, k, v, *, key_mask, causal, rng, n_hashes, n_buckets, chunk, rehash, wrap):
    del k  # shared QK: keys are the normalized queries (see the module docstring)
    if v.shape[1] != q.shape[1]:
        raise ValueError(f"reformer: shared-QK attention needs L == S, got L={q.shape[1]}, S={v.shape[1]}")
    (v,) = masks.hide_masked(key_mask, v)  # a masked value's weight is 0, and 0·NaN is NaN
    return _attention(params, q, v, key_mask, rng, causal=causal, n_hashes=n_hashes,
                      n_buckets=n_buckets, chunk=chunk, rehash=rehash, wrap=wrap)


@functools.partial(jax.jit, static_argnames=("causal", "n_hashes", "n_buckets", "chunk", "rehash", "wrap"))
def _attention(params, q, v, key_mask, rng, *, causal, n_hashes, n_buckets, chunk, rehash, wrap):
    """One compiled program per configuration (eager calls compile once, not op by op)."""
    B, L, H, D = q.shape
    qh, kh, valid, plan, c = _plan(params, q, key_mask, rng, causal=causal, n_hashes=n_hashes,
                                   n_buckets=n_buckets, chunk=chunk, rehash=rehash)
    vh = jnp.pad(bk.heads_first(v), ((0, 0), (0, 0), (0, qh.shape[2] - L), (0, 0)))
    if causal:
        one_round = lambda r: bk.causal_window_attention(  # noqa: E731
            qh, kh, vh, valid, plan, r, window=c, scale=D ** -0.5, no_self=True)
    else:
        one_round = lambda r: bk.sorted_chunk_attention(  # noqa: E731
            qh, kh, vh, valid, plan["spos"], plan["perm"], r, chunk=c, scale=D ** -0.5, no_self=True,
            wrap=wrap)
    outs, lses = jax.vmap(one_round)(jnp.arange(n_hashes))  # one traced round, not n_hashes
    out = outs[0] if n_hashes == 1 else lse.merge(outs, lses)
    return jnp.swapaxes(out[:, :, :L], 1, 2).astype(q.dtype)


def chosen_pattern(params, q, k, v, *, key_mask, causal, rng, n_hashes, n_buckets, chunk, rehash, wrap):
    """bool [B, H, L, L]: the pairs attended in any round (self only where nothing else)."""
    L = q.shape[1]
    _, _, valid, plan, c = _plan(params, q, key_mask, rng, causal=causal, n_hashes=n_hashes,
                                 n_buckets=n_buckets, chunk=chunk, rehash=rehash)
    if causal:
        vis = bk.causal_window_pattern(valid, plan, window=c, no_self=True)
    else:
        vis = bk.sorted_chunk_pattern(valid, plan["spos"], chunk=c, no_self=True, wrap=wrap)
    return vis[:, :, :L, :L]


def state_size(L, H, D, *, n_hashes, n_buckets, chunk, **_):
    """2·H·D·min(L, R·n_buckets·chunk) (one bucket: min(L, chunk)): a causal query sees the
    `chunk` most recent keys of its bucket per round, so a decoder keeps that many per bucket."""
    slots = chunk if n_buckets == 1 else n_hashes * n_buckets * chunk
    return 2 * H * D * min(L, slots)


def _decode_buckets(params, q_t, *, rng, n_hashes, n_buckets, rehash, **_):
    """int32 [B, H, n_hashes]: position t's bucket per round, as `_plan` hashes it."""
    B, _, H, D = q_t.shape
    if n_buckets == 1:
        return jnp.zeros((B, H, n_hashes), jnp.int32)
    rot = (random_rotations(rng, H, D, n_hashes, n_buckets) if rehash and rng is not None
           else params["rotations"])
    proj = jnp.einsum("bhd,hdrk->bhrk", _normalize(q_t[:, 0].astype(F32)), jax.lax.stop_gradient(rot))
    return jnp.argmax(jnp.concatenate([proj, -proj], axis=-1), axis=-1).astype(jnp.int32)


# a full KV cache of the normalized queries (more than state_size's per-bucket windows)
DECODER = decode.bucket_decoder(_decode_buckets, lambda n, /, *, chunk, **_: min(chunk, n),
                                shared_qk=True, self_logit=bk.SELF_LOGIT)

SPEC = register(
    "reformer", family="clustering", exact=False, supports_causal=True, impl=attention,
    options=Options, init_fn=init, state=("rotations",), chosen_pattern=chosen_pattern,
    state_size=state_size, decode_init_fn=DECODER[0], decode_step_fn=DECODER[1],
    complexity="O(N·chunk·n_hashes)",
    description="Shared-QK angular LSH: sort by bucket, attend own + previous chunk, rounds by logsumexp.",
    test_options=({"n_hashes": 2, "n_buckets": 4, "chunk": 4, "rehash": True},),
    bench_options={"n_hashes": 2, "n_buckets": 64, "chunk": 128},
    departures="causal: a query sees the `chunk` most recent keys of its own bucket, not its sorted "
               "chunk and the one before (a sort's chunks move when later tokens change bucket: a "
               "leak); wrap=False: the first chunk does not look back to the last",
)
