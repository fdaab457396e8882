"""SEEDS superpixels (Van den Bergh et al., ECCV 2012) as CAST computes them.

CAST (Ke, Mo, Yu, ICLR 2024, section 3.1 and 3.3) takes 196 SEEDS superpixels of a
224x224 view as its level-0 segments S_0. The authors' code (twke18/CAST,
`moco-v3/suppix_utils/datasets_seeds.py`, read for the settings) runs OpenCV's
`ximgproc` SEEDS on the LAB image of the augmented view with:

  num_levels 1, prior 2, histogram_bins 15, double_step False, 20 iterations,

and 196 requested superpixels at 224x224 (784 at 512x512 for VOC).

Output for the fixed-shape model: a label map whose ids are contiguous 0..n-1 in the
order of OpenCV's ids (ids OpenCV leaves unused are dropped), and a boolean mask over
a fixed `max_segments` slots (True for the n used ids). SEEDS has no randomness, so
the result depends on the image only.

Faithfulness:
  * the authors turn a float [0, 1] tensor into uint8 by `(x * 255).astype(uint8)`
    (truncation); float input here is converted the same way, uint8 input is used as
    is;
  * the authors keep OpenCV's ids and pad by the batch's largest id; here ids are made
    contiguous and padded to a fixed count so shapes do not depend on the batch. The
    set of segments is the same; only ids OpenCV never assigns (empty segments) are
    dropped.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

# The authors' settings (datasets_seeds.py).
NUM_SUPERPIXELS = 196
NUM_ITERATIONS = 20
NUM_LEVELS = 1
PRIOR = 2
HISTOGRAM_BINS = 15
DOUBLE_STEP = False


@dataclasses.dataclass(frozen=True)
class SeedsOptions:
  """SEEDS settings; the defaults are the authors' at 224x224."""
  num_superpixels: int = NUM_SUPERPIXELS
  num_iterations: int = NUM_ITERATIONS
  num_levels: int = NUM_LEVELS
  prior: int = PRIOR
  histogram_bins: int = HISTOGRAM_BINS
  double_step: bool = DOUBLE_STEP


def _cv2():
  try:
    import cv2  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ImportError("jhseg.superpixels.seeds needs OpenCV with the contrib modules "
                      "(pip package opencv-contrib-python-headless)") from error
  if not hasattr(cv2, "ximgproc"):
    raise ImportError(f"jhseg.superpixels.seeds: this OpenCV ({cv2.__version__}) has no "
                      "`ximgproc` module; install opencv-contrib-python-headless instead of "
                      "opencv-python")
  return cv2


def _as_uint8_rgb(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"seeds_superpixels: argument `image` must be an RGB image (H, W, 3); "
                     f"got shape {image.shape}")
  if image.dtype == np.uint8:
    return image
  if np.issubdtype(image.dtype, np.floating):
    if image.size and (image.min() < 0 or image.max() > 1):
      raise ValueError(f"seeds_superpixels: a float `image` must hold values in [0, 1]; got "
                       f"[{image.min()}, {image.max()}]")
    return (image * 255).astype(np.uint8)  # truncation, as the authors
  raise ValueError(f"seeds_superpixels: argument `image` must be uint8 or float in [0, 1]; "
                   f"got dtype {image.dtype}")


def contiguous_labels(labels: np.ndarray, max_segments: int) -> tuple[np.ndarray, np.ndarray]:
  """Renumbers ids to 0..n-1 (keeping their order) and masks n of `max_segments` slots.

  Returns (labels int32 (H, W), mask bool (max_segments,)). Raises ValueError if there
  are more than `max_segments` distinct ids.
  """
  ids, inverse = np.unique(labels, return_inverse=True)
  if len(ids) > max_segments:
    raise ValueError(f"contiguous_labels: {len(ids)} segments do not fit in "
                     f"max_segments={max_segments}; raise max_segments")
  mask = np.arange(max_segments) < len(ids)
  return inverse.reshape(labels.shape).astype(np.int32), mask


def seeds_superpixels(image: np.ndarray, options: SeedsOptions = SeedsOptions(), *,
                      max_segments: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """SEEDS superpixels of one RGB image, padded to a fixed number of segments.

  Args:
    image: (H, W, 3) RGB, uint8 or float in [0, 1].
    options: SEEDS settings (default: the authors').
    max_segments: number of slots of the mask; default `options.num_superpixels`
      (OpenCV never returns more than requested).

  Returns:
    labels: (H, W) int32 contiguous segment ids in [0, n).
    mask: (max_segments,) bool, True for the n segments present.
  """
  cv2 = _cv2()
  rgb = _as_uint8_rgb(image)
  lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
  height, width = lab.shape[:2]
  seeds = cv2.ximgproc.createSuperpixelSEEDS(
      width, height, 3, options.num_superpixels, options.num_levels, options.prior,
      options.histogram_bins, options.double_step)
  seeds.iterate(lab, options.num_iterations)
  slots = options.num_superpixels if max_segments is None else max_segments
  return contiguous_labels(seeds.getLabels(), slots)


def seeds_superpixels_batch(images: Sequence[np.ndarray] | np.ndarray,
                            options: SeedsOptions = SeedsOptions(), *,
                            max_segments: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """`seeds_superpixels` of each image of a (B, H, W, 3) batch -> (B, H, W), (B, S)."""
  results = [seeds_superpixels(image, options, max_segments=max_segments) for image in images]
  if not results:
    raise ValueError("seeds_superpixels_batch: argument `images` is empty")
  labels, masks = zip(*results)
  return np.stack(labels), np.stack(masks)


def seeds_label_map(image: np.ndarray, **options) -> np.ndarray:
  """`jhseg.superpixels.METHODS` form: (H, W) int32 labels 0..n-1 of `seeds_superpixels`;
  `options` are `SeedsOptions` fields (default: the authors' settings)."""
  names = {f.name for f in dataclasses.fields(SeedsOptions)}
  unknown = sorted(set(options) - names)
  if unknown:
    raise ValueError(f"seeds superpixels: unknown option(s) {unknown}; valid: {sorted(names)}")
  labels, _ = seeds_superpixels(image, SeedsOptions(**options))
  return labels
