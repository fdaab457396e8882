"""Non-learned reference hierarchies, computed in every method's evaluation.

Each is a function `(image, **options) -> [G0, G1, ...]`: an (H, W, 3) float image
in [0, 1] to nested (H, W) integer label maps, finest first, so that a method's
evaluation can score the same baselines side by side with its own levels (e.g.
NFCovering and boundary F of HSG vs `colour_kmeans`). `REFERENCE_HIERARCHIES`
names them for configs; `reference_hierarchy(name, image, **options)` calls one.

- colour_kmeans: k-means on colour and position from a grid (as HSG's G0 on
  embeddings), then k-means of the segments' mean colours per coarser level
  (HSG's evaluation baseline).
- superpixel_colour_dissimilarity: mean-LAB-colour dissimilarities of adjacent
  superpixels, merged into a UCM by `jhseg.hierarchy.superpixel_graph` (DEL's and
  CAST's baseline: the same superpixels merged by colour).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from jhseg.models import spherical_kmeans as skm


def _kmeans(points: np.ndarray, weights: np.ndarray, centres: np.ndarray,
            iterations: int) -> np.ndarray:
  """Weighted Lloyd iterations from `centres`; returns labels. Empty clusters stay put."""
  labels = np.zeros(len(points), np.int64)
  # Assignment by |c|^2 - 2 p.c (|p - c|^2 without |p|^2: same argmin) in float32: one
  # (N, K) product instead of an (N, K, C) float64 difference array, ~10x faster on a
  # BSDS image (0.15 M pixels, 36 centres); the centre updates stay in float64.
  points32 = points.astype(np.float32)
  for _ in range(iterations):
    centres32 = centres.astype(np.float32)
    distances = (centres32 ** 2).sum(-1)[None, :] - 2.0 * (points32 @ centres32.T)
    labels = np.argmin(distances, axis=1)
    mass = np.bincount(labels, weights=weights, minlength=len(centres))
    sums = np.stack([np.bincount(labels, weights=weights * points[:, c], minlength=len(centres))
                     for c in range(points.shape[1])], axis=1)
    filled = mass > 0
    centres = np.where(filled[:, None], sums / np.maximum(mass, 1e-12)[:, None], centres)
  return labels


def _farthest_points(points: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
  """Deterministic k-means initialisation: the heaviest point, then farthest-first."""
  chosen = [int(np.argmax(weights))]
  distances = ((points - points[chosen[0]]) ** 2).sum(-1)
  while len(chosen) < min(k, len(points)):
    chosen.append(int(np.argmax(distances)))
    distances = np.minimum(distances, ((points - points[chosen[-1]]) ** 2).sum(-1))
  return points[chosen]


def colour_kmeans_hierarchy(image: np.ndarray, *, grid: Sequence[int],
                            num_clusters: Sequence[int], iterations: int = 10,
                            location_weight: float = 1.0) -> list[np.ndarray]:
  """Baseline hierarchy on raw colour, nested by construction, finest first.

  G0: k-means on (R, G, B, w y, w x) (coordinates in [-0.5, 0.5], w =
  `location_weight`) from the cells of `grid`, as HSG's G0 on embeddings; G_{l+1}:
  k-means of the mean colours of the G_l segments (weighted by their areas, started
  farthest-first from the largest) into `num_clusters[l]` clusters.

  Args:
    image: (H, W, 3) float image in [0, 1].
  Returns:
    [G0, G1, ...] (H, W) int64 label maps.
  """
  image = np.asarray(image, np.float64)
  height, width = image.shape[:2]
  rows, cols = grid
  cells = np.asarray(skm.grid_labels(height, width, (rows, cols))).ravel()
  location = np.asarray(skm.location_features(height, width)).reshape(-1, 2)
  points = np.concatenate([image.reshape(-1, 3), location_weight * location], axis=1)
  ones = np.ones(len(points))
  centres = np.stack([points[cells == c].mean(0) for c in range(rows * cols)])
  labels = _kmeans(points, ones, centres, iterations)
  levels = [labels.reshape(height, width)]
  colours = image.reshape(-1, 3)
  for k in num_clusters:
    ids, inverse = np.unique(labels, return_inverse=True)
    area = np.bincount(inverse).astype(np.float64)
    means = np.stack([np.bincount(inverse, weights=colours[:, c]) for c in range(3)], 1)
    means /= area[:, None]
    parents = _kmeans(means, area, _farthest_points(means, area, k), iterations)
    labels = parents[inverse]
    levels.append(labels.reshape(height, width))
  return levels


# name -> function(image, **options) -> [G0, G1, ...] (finest first).
REFERENCE_HIERARCHIES: dict[str, Callable[..., list[np.ndarray]]] = {
    "colour_kmeans": colour_kmeans_hierarchy,
}


def reference_hierarchy(name: str, image: np.ndarray, **options: Any) -> list[np.ndarray]:
  """The reference hierarchy `name` of `image`; unknown names list the valid ones."""
  if name not in REFERENCE_HIERARCHIES:
    raise ValueError(f"unknown reference hierarchy {name!r}; valid names: "
                     f"{sorted(REFERENCE_HIERARCHIES)}")
  return REFERENCE_HIERARCHIES[name](image, **options)


def colour_dissimilarity(lab_means: np.ndarray, pairs: np.ndarray, *, scale: float) -> np.ndarray:
  """1 - d of DEL's eq. 3 on mean CIELAB colours divided by `scale`: the dissimilarity a
  non-learned embedding (each superpixel's mean colour) gives adjacent superpixel pairs."""
  distance = np.abs(lab_means[pairs[:, 0]] - lab_means[pairs[:, 1]]).sum(-1) / scale
  return 1.0 - 2.0 / (1.0 + np.exp(distance))


def mean_lab(image: np.ndarray, superpixels: np.ndarray, num: int) -> np.ndarray:
  """(num, 3) mean CIELAB colour of each superpixel id 0..num-1."""
  from skimage import color  # pylint: disable=g-import-not-at-top  (heavy import)

  lab = color.rgb2lab(np.clip(image, 0, 1)).reshape(-1, 3)
  ids = superpixels.ravel()
  counts = np.maximum(np.bincount(ids, minlength=num), 1)
  sums = np.stack([np.bincount(ids, lab[:, c], minlength=num) for c in range(3)], -1)
  return sums / counts[:, None]


def superpixel_colour_dissimilarity(image: np.ndarray, superpixels: np.ndarray,
                                    pairs: np.ndarray, num: int, *, scale: float) -> np.ndarray:
  """Colour merging of superpixels: `colour_dissimilarity` of the pairs' mean LAB colours.

  Fed to `jhseg.hierarchy.superpixel_graph.ucm_from_superpixel_graph` it gives the
  "same superpixels merged by colour" reference hierarchy (DEL's and CAST's baseline).
  """
  return colour_dissimilarity(mean_lab(image, superpixels, num), pairs, scale=scale)
