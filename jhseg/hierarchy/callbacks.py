"""Host callbacks: the Higra steps inside `jax.jit`, sharded so each device sends its own shard.

Each wrapper takes batched edge arrays h (B, H, W-1), v (B, H-1, W), calls the NumPy
function of this package once per image through `jax.pure_callback` with fixed output
shapes, and -- given a mesh -- runs under `jax.shard_map` over the mesh's 'data' axis so
that every device ships only its (B / n_data) images to the host (no gather of the batch
on one device; on meshes with other axes, e.g. 'model', each replica of a data shard
calls back for it). Leading dims other than B are allowed without a mesh. The outputs are not
differentiable: inputs go through `lax.stop_gradient`, so the wrappers can sit inside a
differentiated function (their cotangent is zero).

Callbacks of different devices may run concurrently on several host threads; the NumPy
functions build their own Higra graphs per call and pass leaf graphs explicitly.

Several CPU devices in one process (tests' fake devices): JAX copies every callback operand
to CPU device 0 before calling back, and operands of >= 100 KiB are copied asynchronously by
the CPU runtime, which deadlocks when every device is blocked inside its callback (observed
with jax 0.10.2 and 4 fake CPU devices at 321x481 inputs). On CPU meshes of more than one
device the operands are therefore sent as flat chunks of `CPU_CHUNK_BYTES` (copied inline)
and reassembled on the host; accelerator meshes send whole arrays.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from jhseg import grid
from jhseg.hierarchy import cuts
from jhseg.hierarchy import ucm
from jhseg.hierarchy import watershed

DATA_AXIS = "data"
CPU_CHUNK_BYTES = 64 * 1024  # below the CPU runtime's 100 KiB inline-copy limit


def _to_chunks(x, max_bytes: int | None) -> list:
  """x -> flat pieces of at most max_bytes (or [x] if max_bytes is None)."""
  if max_bytes is None:
    return [x]
  step = max(1, max_bytes // x.dtype.itemsize)
  flat = x.reshape(-1)
  return [flat[i:i + step] for i in range(0, max(flat.size, 1), step)]


def _from_chunks(chunks, shape: tuple[int, ...], chunked: bool) -> np.ndarray:
  """Host side of `_to_chunks`; keeps leading dims that vmap may have added to every chunk."""
  if not chunked:
    return np.asarray(chunks[0])
  chunks = [np.asarray(c) for c in chunks]
  lead = chunks[0].shape[:-1]
  return np.concatenate(chunks, axis=-1).reshape(lead + shape)


def _per_image_on_host(fn: Callable, image_outputs: tuple[tuple[tuple[int, ...], np.dtype], ...],
                       h, v, *, chunk_bytes: int | None = None):
  """pure_callback running fn(h_i, v_i) -> arrays of `image_outputs` (shape, dtype) per image i.

  The host allocates outputs from the leading dims it actually receives, which under
  `jax.vmap` (vmap_method='broadcast_all') include the vmapped dimension. With
  `chunk_bytes`, h and v travel as flat chunks of at most that size (see module doc).
  """
  h_shape, v_shape = tuple(h.shape), tuple(v.shape)
  h_chunks, v_chunks = _to_chunks(h, chunk_bytes), _to_chunks(v, chunk_bytes)
  chunked = chunk_bytes is not None

  def host(*chunks):
    h = _from_chunks(chunks[:len(h_chunks)], h_shape, chunked)
    v = _from_chunks(chunks[len(h_chunks):], v_shape, chunked)
    batch = h.shape[:-2]
    results = tuple(np.empty(batch + shape, dtype) for shape, dtype in image_outputs)
    for index in np.ndindex(batch):
      for result, value in zip(results, fn(h[index], v[index])):
        result[index] = value
    return results

  batch = h.shape[:-2]
  outputs = tuple(jax.ShapeDtypeStruct(batch + shape, dtype) for shape, dtype in image_outputs)
  operands = [jax.lax.stop_gradient(c) for c in h_chunks + v_chunks]
  return jax.pure_callback(host, outputs, *operands, vmap_method="broadcast_all")


def _run(fn: Callable, output_shapes, output_dtypes, h, v, mesh, caller: str):
  """Checks shapes and runs `fn` per image, under shard_map over 'data' if `mesh` is given."""
  grid.grid_shape_from_edges(h, v, caller=caller)
  h, v = jnp.asarray(h), jnp.asarray(v)
  image_outputs = tuple((tuple(s), np.dtype(d)) for s, d in zip(output_shapes, output_dtypes))
  local = functools.partial(_per_image_on_host, fn, image_outputs)
  if mesh is None:
    return local(h, v)
  if DATA_AXIS not in mesh.axis_names:
    raise ValueError(f"{caller}: argument `mesh` must have a '{DATA_AXIS}' axis; got axes "
                     f"{mesh.axis_names}.")
  num_shards = mesh.shape[DATA_AXIS]
  if h.ndim != 3 or h.shape[0] % num_shards:
    raise ValueError(
        f"{caller}: with a mesh, argument `h` must have shape (B, H, W-1) with B divisible by the "
        f"'{DATA_AXIS}' axis size {num_shards}; got {h.shape}.")
  spec = P(DATA_AXIS)
  if mesh.devices.size > 1 and mesh.devices.flat[0].platform == "cpu":
    local = functools.partial(local, chunk_bytes=CPU_CHUNK_BYTES)
  if dict(zip(mesh.axis_names, mesh.axis_types))[DATA_AXIS] == jax.sharding.AxisType.Explicit:
    # Explicit axes type every array's sharding: put the batch on 'data' first.
    sharding = jax.NamedSharding(mesh, spec)
    h, v = jax.reshard(h, sharding), jax.reshard(v, sharding)
  return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec),
                       out_specs=tuple(spec for _ in output_shapes))(h, v)


def _float_out(h) -> jnp.dtype:
  return jnp.promote_types(jnp.asarray(h).dtype, jnp.float32)


def ucm_from_dissimilarity_jax(h, v, *, min_region_area: float = 30, linkage: str = "average",
                               mesh: jax.sharding.Mesh | None = None):
  """Batched `ucm.ucm_from_dissimilarity` inside jit: (h, v) dissimilarities -> UCM (h, v)."""
  if linkage not in ucm.LINKAGES:
    raise ValueError(f"ucm_from_dissimilarity_jax: unknown linkage {linkage!r}; valid names: "
                     f"{sorted(ucm.LINKAGES)}.")
  dtype = _float_out(h)

  def one(h, v):
    return ucm.ucm_from_dissimilarity(h, v, min_region_area=min_region_area, linkage=linkage)

  shapes = (np.shape(h)[-2:], np.shape(v)[-2:])
  return _run(one, shapes, (dtype, dtype), h, v, mesh, "ucm_from_dissimilarity_jax")


def watershed_superpixels_jax(h, v, *, mesh: jax.sharding.Mesh | None = None):
  """Batched `watershed.watershed_superpixels` inside jit -> (..., H, W) int32 labels."""
  shape = (np.shape(h)[-2], np.shape(h)[-1] + 1)
  one = lambda h, v: (watershed.watershed_superpixels(h, v),)
  (labels,) = _run(one, (shape,), (jnp.int32,), h, v, mesh, "watershed_superpixels_jax")
  return labels


def cut_with_num_regions_jax(h, v, num_regions: int, *, mesh: jax.sharding.Mesh | None = None):
  """Batched `cuts.cut_with_num_regions` inside jit -> (..., H, W) int32 labels.

  `num_regions` is a static Python int (the same for every image).
  """
  if int(num_regions) < 1:
    raise ValueError(f"cut_with_num_regions_jax: argument `num_regions` must be >= 1; got {num_regions}.")
  shape = (np.shape(h)[-2], np.shape(h)[-1] + 1)
  one = lambda h, v: (cuts.cut_with_num_regions(h, v, int(num_regions)),)
  (labels,) = _run(one, (shape,), (jnp.int32,), h, v, mesh, "cut_with_num_regions_jax")
  return labels
