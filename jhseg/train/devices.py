"""Devices, the data-parallel mesh and multi-host start-up.

One mesh axis, `data`, spans every device of every process. Batches are
sharded along it; parameters and optimizer state are replicated.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

# Environment variables through which cluster launchers describe a multi-host job.
_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE",
                "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """Calls `jax.distributed.initialize` when the job spans several processes.

  Explicit settings in `config.distributed` (coordinator_address,
  num_processes, process_id) win; otherwise JAX auto-detects the cluster
  (SLURM, Open MPI, Cloud TPU) when its environment variables are present.
  """
  dist = config.get("distributed", ml_collections.ConfigDict())
  if jax.distributed.is_initialized():
    return
  if dist.get("coordinator_address"):
    if dist.get("cpu_collectives"):
      jax.config.update("jax_cpu_collectives_implementation", dist.cpu_collectives)
    jax.distributed.initialize(coordinator_address=dist.coordinator_address,
                               num_processes=dist.num_processes, process_id=dist.process_id)
  elif any(k in os.environ for k in _CLUSTER_ENV):
    jax.distributed.initialize()
  else:
    return
  logging.info("process %d of %d, %d local of %d devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def make_data_mesh() -> Mesh:
  """All devices on the `data` axis, in Auto mode: XLA propagates shardings.

  Auto (rather than Explicit) keeps host-side and scatter-style code such as
  confusion matrices free of sharding annotations; the batch sharding is
  fixed at the input and the replicated state at the output of each step.
  """
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every leaf of `tree` on all devices of `mesh` (every process's copy).

  Typed PRNG keys (the `nnx.Rngs` state behind dropout) go through their raw uint32
  data: with several processes `jax.device_put` accepts only NumPy or uncommitted
  plain arrays onto a sharding over non-addressable devices, not key arrays.
  """
  sharding = replicated(mesh)

  def put(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(jax.device_put(jax.random.key_data(x), sharding),
                                      impl=jax.random.key_impl(x))
    return jax.device_put(x, sharding)

  return jax.tree.map(put, tree)


def per_process_batch_size(global_batch_size: int) -> int:
  n_dev, n_proc = jax.device_count(), jax.process_count()
  if global_batch_size % n_dev:
    raise ValueError(f"config.data.batch_size={global_batch_size} must be divisible by the "
                     f"number of devices ({n_dev})")
  return global_batch_size // n_proc


def to_global_batch(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, Any]:
  """Assembles each process's slice of the batch into one globally sharded array."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
