"""CAST's hierarchical segmentation: S_l = S_0 x P_1 x ... x P_l (eq. 2, Alg. 2, eq. 4).

Each pooling l assigns every level-(l-1) token to one level-l region by the argmax of
its assignment logits (the hard form of P_l, as the authors' visualisation notebook
and their `BlockFusion` unpooling). Chaining these maps from the superpixels gives
every pixel a region id at every level:

  a_l = argmax_K logits_l                      (B, N_{l-1}) -> ids in [0, N_l)
  g_l = a_l o a_{l-1} o ... o a_1              superpixel -> level-l region
  S_l(p) = g_l(S_0(p))

so S_l refines S_{l+1} by construction (S_{l+1} = a_{l+1} o S_l). Pixels of superpixels
that cover no stem cell (padded tokens) take their token's argmax, as in the authors'
code (which gives such superpixels zero features).

`hierarchy_ucm` turns the nested maps of one image into an ultrametric contour map
(interpixel (2H-1, 2W-1), the format `python -m jhseg.evaluate` reads from `.npy`) where
a boundary's value is the altitude of the coarsest level separating its pixels. Level
ids are cluster ids: a region may be spatially disconnected, and cutting the UCM
yields its connected components.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jhseg import grid
from jhseg import hierarchy
from jhseg.models import cast as cast_model


def superpixel_region_ids(levels: Sequence[cast_model.LevelOutput]) -> list[jax.Array]:
  """[g_1, ..., g_L]: (B, S) level-l region id of each superpixel token."""
  ids = []
  current = None
  for level in levels:
    assignment = jnp.argmax(level.logits, axis=-1).astype(jnp.int32)  # (B, N_{l-1})
    current = assignment if current is None else jnp.take_along_axis(assignment, current,
                                                                     axis=1)
    ids.append(current)
  return ids


def nested_label_maps(superpixels: jax.Array, levels: Sequence[cast_model.LevelOutput]
                      ) -> jax.Array:
  """(B, L + 1, H, W) int32 [S_0, S_1, ..., S_L], finest first (jit-able).

  Args:
    superpixels: (B, H, W) int superpixel ids S_0 in [0, S), as given to the model.
    levels: the model's `CASTOutput.levels`.
  """
  b, h, w = superpixels.shape
  if not levels or levels[0].logits.shape[0] != b:
    raise ValueError(f"nested_label_maps: {b} superpixel maps but levels for batch "
                     f"{levels[0].logits.shape[0] if levels else 'none'}; pass the model's "
                     f"`CASTOutput.levels` for the same batch")
  flat = superpixels.reshape(b, -1).astype(jnp.int32)
  maps = [flat] + [jnp.take_along_axis(ids, flat, axis=1) for ids in
                   superpixel_region_ids(levels)]
  return jnp.stack(maps, axis=1).reshape(b, len(maps), h, w)


def hierarchy_ucm(nested: np.ndarray, altitudes: Sequence[float] | None = None, *,
                  check_nested: bool = True) -> np.ndarray:
  """Interpixel UCM (2H-1, 2W-1) of one image's nested maps (K, H, W), finest first.

  A boundary between pixels gets altitudes[k] for the coarsest level k whose labels
  differ across it (default altitudes (1/K, ..., 1)): thresholding at altitudes[k]
  gives the connected components of level k + 1, below altitudes[0] those of S_0.
  `check_nested=False` skips the refinement check (seconds per level on a BSDS image)
  for maps nested by construction, such as `nested_label_maps`' (or their nearest
  resize).
  """
  nested = np.asarray(nested)
  if nested.ndim != 3:
    raise ValueError(f"hierarchy_ucm: argument `nested` must be (K, H, W) label maps of one "
                     f"image, finest first; got shape {nested.shape}")
  if check_nested:
    h, v = hierarchy.ultrametric_from_nested_segmentations(list(nested), altitudes)
  else:
    if altitudes is None:
      altitudes = np.arange(1, len(nested) + 1) / len(nested)
    h, v = grid.nested_labels_to_ultrametric(nested, np.asarray(altitudes, np.float32))
  return np.asarray(grid.edges_to_interpixel(h, v))
