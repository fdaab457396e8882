"""Boundary pixel matching of the BSDS benchmark, via Higra.

The BSDS boundary benchmark (Martin, Fowlkes & Malik, PAMI 2004; Arbelaez et
al., PAMI 2011) matches each machine boundary pixel to at most one human
boundary pixel no farther than `max_distance * diagonal`, solving a bipartite
assignment of maximum cardinality and minimum total Euclidean distance
(`correspondPixels` in the official code). Higra's `match_pixels_image_2d`
reimplements that matcher with Goldberg & Kennedy's CSA solver; this module is
the only place in `jhseg.metrics`' dependency chain that calls it.

Differences to the official matcher, for the record: the official code adds
random "outlier" edges to make the assignment problem perfect, so its counts
vary by a few pixels between runs; Higra solves the exact max-cardinality
min-cost problem deterministically. The number of matched human pixels is
therefore the same as in any exact solver; which machine pixels are matched
(and hence precision after the union over annotators) depends on tie-breaking
between equal-cost matchings.
"""
import higra as hg
import numpy as np

# Official BSDS benchmark default: 0.75% of the image diagonal.
DEFAULT_MAX_DISTANCE = 0.0075


def match_boundary_pixels(
    machine: np.ndarray,
    truth: np.ndarray,
    *,
    max_distance: float = DEFAULT_MAX_DISTANCE,
) -> tuple[np.ndarray, np.ndarray]:
  """Matches the boundary pixels of `machine` to those of `truth`.

  Args:
    machine: HxW boolean (or 0/1) boundary map.
    truth: HxW boolean (or 0/1) boundary map of the same shape.
    max_distance: largest matching distance, as a fraction of the image
      diagonal sqrt(H^2 + W^2) (pixels are matchable if their distance is at
      most that).

  Returns:
    `(matched_machine, matched_truth)`: HxW boolean maps of the pixels of each
    image that belong to the matching (as `correspondPixels`' `match1 > 0`,
    `match2 > 0`).
  """
  machine = np.asarray(machine)
  truth = np.asarray(truth)
  if machine.ndim != 2 or machine.shape != truth.shape:
    raise ValueError(
        f"machine and truth must be 2-D maps of the same shape, got {machine.shape} and {truth.shape}")
  matched_machine = np.zeros(machine.shape, bool)
  matched_truth = np.zeros(truth.shape, bool)
  if machine.any() and truth.any():
    sources, targets = hg.match_pixels_image_2d(
        machine.astype(np.uint8), truth.astype(np.uint8), max_distance, "relative")
    matched_machine.flat[np.asarray(sources, np.int64)] = True
    matched_truth.flat[np.asarray(targets, np.int64)] = True
  return matched_machine, matched_truth
