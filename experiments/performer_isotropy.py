"""Performer's orthogonal features before and after the QR sign fix (issue 18, item 10a):
python experiments/performer_isotropy.py [--out FILE]

"before" is the draw without the fix (Q of the QR taken as it is, so row 0 of every block has a
negative first coordinate); "after" is `performer.random_features`; "iid" are Gaussian rows.
Reports the fraction of blocks whose row 0 starts negative (isotropic: 0.5) and the mean
|performer − dense| over 4 feature draws at D = 16, L = 64, H = 2, for M = 256 ... 65,536.
"""
import argparse

import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo import attention
from attn_zoo.attention.variants import dense, performer

D = 16


def biased_features(rng, num_features, dim):
    """The draw before the fix: performer.random_features less the signs of R's diagonal."""
    nblocks = -(-num_features // dim)
    g = jax.random.normal(rng, (nblocks * dim + num_features, dim), jnp.float32)
    qmat, _ = jnp.linalg.qr(g[: nblocks * dim].reshape(nblocks, dim, dim))
    rows = jnp.swapaxes(qmat, 1, 2).reshape(nblocks * dim, dim)[:num_features]
    return rows * jnp.linalg.norm(g[nblocks * dim:], axis=-1)[:, None]


DRAWS = {"before": biased_features, "after": performer.random_features,
         "iid": lambda rng, m, d: performer.random_features(rng, m, d, orthogonal=False)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    r = np.random.RandomState(4)
    q, k, v = (jnp.asarray(r.randn(1, 64, 2, D) * s, jnp.float32) for s in (0.6, 0.6, 1.0))
    ref = dense.attention({}, q, k, v)
    spec = attention.get("performer")
    rngs = jax.random.split(jax.random.PRNGKey(10), 4)
    apply = jax.jit(lambda w: spec.apply({"features": w}, q, k, v, num_features=w.shape[0]))

    lines = ["# Performer features: isotropy and error against exact softmax", "",
             "`python experiments/performer_isotropy.py`: D = 16, q, k ~ 0.6·N(0, 1), v ~ N(0, 1), "
             "L = 64, H = 2; error = mean |performer − dense| over 4 draws.", ""]
    blocks = 4096
    neg = {name: float((np.asarray(draw(jax.random.PRNGKey(0), blocks * D, D))
                        .reshape(blocks, D, D)[:, 0, 0] < 0).mean())
           for name, draw in DRAWS.items() if name != "iid"}
    lines += [f"Fraction of {blocks} blocks whose row 0 has a negative first coordinate (isotropic: "
              f"0.5): before {neg['before']:.3f}, after {neg['after']:.3f}.", "",
              "| M | before | after | iid |", "|---|---|---|---|"]
    for m in [256, 1024, 4096, 16384, 65536]:
        cells = []
        for name, draw in DRAWS.items():
            errs = [float(jnp.mean(jnp.abs(apply(draw(rng, m, D)) - ref))) for rng in rngs]
            cells.append(f"{np.mean(errs):.2e}")
        lines.append(f"| {m:,} | " + " | ".join(cells) + " |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
