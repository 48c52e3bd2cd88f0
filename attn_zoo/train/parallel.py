"""Data parallelism with jax.sharding: a 1-D 'data' mesh, batch sharded, state replicated."""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def data_mesh() -> Mesh:
    """All devices (every host's, after jax.distributed.initialize) on one 'data' axis."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(batch: dict, mesh) -> dict:
    """Global numpy batch (identical on every host) -> arrays split along B over 'data'."""
    sharding = NamedSharding(mesh, P("data"))
    return {k: jax.make_array_from_callback(v.shape, sharding, lambda idx, v=v: v[idx])
            for k, v in batch.items()}


def check_batch(batch_size, mesh, name="batch_size"):
    if batch_size % mesh.size:
        raise ValueError(f"train.{name}={batch_size} must be divisible by the {mesh.size} devices")
