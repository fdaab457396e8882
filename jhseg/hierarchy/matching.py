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
  machine = machine.astype(bool)
  truth = truth.astype(bool)
  radius = max_distance * float(np.hypot(*machine.shape))
  if not _has_pair_at_positive_distance(machine, truth, radius):
    # Only coincident pixels are matchable: each pixel has at most one candidate, so the matching is
    # their intersection. (Higra's CSA solver crashes when every edge costs 0.)
    both = machine & truth
    return both, both.copy()
  matched_machine = np.zeros(machine.shape, bool)
  matched_truth = np.zeros(truth.shape, bool)
  sources, targets = hg.match_pixels_image_2d(
      machine.astype(np.uint8), truth.astype(np.uint8), max_distance, "relative")
  matched_machine.flat[np.asarray(sources, np.int64)] = True
  matched_truth.flat[np.asarray(targets, np.int64)] = True
  return matched_machine, matched_truth


def _offsets_within(radius: float) -> list[tuple[int, int]]:
  """Non-zero integer offsets of length <= radius, nearest first."""
  r = int(np.floor(radius))
  offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
             if 0 < dy * dy + dx * dx <= radius * radius]
  return sorted(offsets, key=lambda o: o[0] * o[0] + o[1] * o[1])


def _has_pair_at_positive_distance(machine: np.ndarray, truth: np.ndarray, radius: float) -> bool:
  """Whether some machine pixel has a human pixel at distance in (0, radius]."""
  h, w = machine.shape
  for dy, dx in _offsets_within(radius):
    a = machine[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    b = truth[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    if np.any(a & b):
      return True
  return False
