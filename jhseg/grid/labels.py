"""Label maps -> boundary edges, and nested label maps -> ultrametric edge weights."""
from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp


def _check_labels(labels, name: str, caller: str) -> jnp.ndarray:
  labels = jnp.asarray(labels)
  if labels.ndim < 2:
    raise ValueError(f"{caller}: argument `{name}` must be a label map (..., H, W); got {labels.shape}.")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"{caller}: argument `{name}` must hold integer labels; got dtype {labels.dtype}.")
  return labels


def boundary_edges(labels) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Label map (..., H, W) -> boolean (h (..., H, W-1), v (..., H-1, W)), True where labels differ."""
  labels = _check_labels(labels, "labels", "boundary_edges")
  return labels[..., :, 1:] != labels[..., :, :-1], labels[..., 1:, :] != labels[..., :-1, :]


def _is_nested_one(fine, coarse):
  """True iff every label of `fine` lies in a single label of `coarse` (1-D inputs)."""
  order = jnp.lexsort((coarse, fine))  # sort by fine, then coarse
  fine, coarse = fine[order], coarse[order]
  same_fine = fine[1:] == fine[:-1]
  return jnp.all(~same_fine | (coarse[1:] == coarse[:-1]))


def is_nested(fine, coarse) -> jnp.ndarray:
  """Whether label map `fine` refines `coarse`: each fine label is inside one coarse label.

  Args:
    fine, coarse: integer label maps of the same shape (..., H, W).

  Returns:
    A boolean array of shape (...). Labels are compared as labels: a fine label
    split over two coarse labels makes the pair non-nested even if its pieces are
    not connected.
  """
  fine = _check_labels(fine, "fine", "is_nested")
  coarse = _check_labels(coarse, "coarse", "is_nested")
  if fine.shape != coarse.shape:
    raise ValueError(
        f"is_nested: arguments `fine` and `coarse` must have the same shape; got {fine.shape} "
        f"and {coarse.shape}.")
  batch = fine.shape[:-2]
  flat_fine = fine.reshape((-1, fine.shape[-2] * fine.shape[-1]))
  flat_coarse = coarse.reshape(flat_fine.shape)
  return jax.vmap(_is_nested_one)(flat_fine, flat_coarse).reshape(batch)


def nested_labels_to_ultrametric(labels_fine_to_coarse, altitudes) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Nested label maps, finest first, -> ultrametric edge weights (h, v).

  With K label maps L_0 (finest) ... L_{K-1} (coarsest) and altitudes a_0 < ... < a_{K-1}
  (positive), the weight of edge e = {p, q} is

    w(e) = max_k a_k [L_k(p) != L_k(q)]   (0 if no level separates p and q).

  For nested maps (every L_k refines L_{k+1}; check with `is_nested`) the levels
  separating an edge are 0..m for some m, so w(e) = a_m is the altitude of the
  coarsest level still separating it, and the cut of w at any t in [a_k, a_{k+1})
  (boundaries = edges with w > t) is L_{k+1}; cutting below a_0 gives L_0 (regions
  being connected components: a label split in several pieces gives several regions).
  Nesting is not checked here (that would need a host sync under jit); for
  non-nested maps the result is still defined but need not be an ultrametric.

  Args:
    labels_fine_to_coarse: integer array (K, ..., H, W) or a sequence of K label
      maps of shape (..., H, W).
    altitudes: (K,) positive increasing altitudes, e.g. (0.5, 1.0) for parts/objects.

  Returns:
    Float (h (..., H, W-1), v (..., H-1, W)).
  """
  caller = "nested_labels_to_ultrametric"
  if isinstance(labels_fine_to_coarse, (list, tuple)):
    shapes = {tuple(np.shape(l)) for l in labels_fine_to_coarse}
    if len(shapes) != 1:
      raise ValueError(
          f"{caller}: all maps in `labels_fine_to_coarse` must have one shape; got {sorted(shapes)}.")
    labels_fine_to_coarse = jnp.stack([jnp.asarray(l) for l in labels_fine_to_coarse])
  labels = _check_labels(labels_fine_to_coarse, "labels_fine_to_coarse", caller)
  if labels.ndim < 3:
    raise ValueError(f"{caller}: argument `labels_fine_to_coarse` must be (K, ..., H, W); got {labels.shape}.")
  altitudes = jnp.asarray(altitudes)
  if altitudes.shape != labels.shape[:1]:
    raise ValueError(
        f"{caller}: argument `altitudes` must have shape (K,) = ({labels.shape[0]},), one per level "
        f"of `labels_fine_to_coarse`; got {altitudes.shape}.")
  altitudes = altitudes.astype(jnp.result_type(altitudes.dtype, jnp.float32))
  level_shape = (-1,) + (1,) * (labels.ndim - 1)
  h, v = boundary_edges(labels)
  a = altitudes.reshape(level_shape)
  zero = jnp.zeros((), altitudes.dtype)
  return jnp.max(jnp.where(h, a, zero), axis=0), jnp.max(jnp.where(v, a, zero), axis=0)
