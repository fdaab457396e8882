"""Augmentations of images with ultrametric targets (Lapertot, Chierchia, Perret).

The paper trains its U-Net with "slight rotations, Gaussian noise, optical
distortion and texture changes". Geometric changes move the boundaries, so the
target must move with the image *and stay an ultrametric*. Warping the target's
edge weights directly would not do (interpolated weights are no hierarchy, and
nearest-neighbour warping of edges can open contours). Instead:

1. the stored target (an interpixel UCM with levels a_0 < ... < a_{K-1}, e.g.
   {0.5, 1}) is cut at its levels: L_k = the regions of the edges with weight
   < a_k (`regions_below`), a nested family of label maps, finest first;
2. the image is resampled bilinearly and every L_k with nearest neighbour *at
   the same source point*, so every pixel keeps one coherent set of labels and
   the maps stay nested;
3. the target is rebuilt from the warped maps as
   `jhseg.grid.nested_labels_to_ultrametric` does (`ultrametric_from_cuts`): an
   edge gets the largest a_k whose map separates its pixels.

Cutting the stored target (rather than rebuilding from instance/part maps)
keeps one code path for every target of the paper -- BGM_PC's target comes from
PASCAL-Context label maps, not from instances and parts -- and makes the
identity warp return the stored target exactly. Pixels that a rotation brings
in from outside the image are marked invalid in `valid` (the loss ignores
every edge touching them) instead of being filled with invented content.

Choices where the paper names an augmentation without parameters (albumentations'
defaults of the time were the likely tools; the ranges below are ours):

- rotation: angle uniform in [-max_rotation, max_rotation] degrees (10),
  about the image centre;
- optical distortion: radial (barrel/pincushion) distortion of the sampling
  grid, r_src = r (1 + k r^2) with r the distance to the centre in units of the
  half-diagonal and k uniform in [-max_distortion, max_distortion] (0.1);
- Gaussian noise: i.i.d. N(0, sigma^2) added to the [0, 1] image, sigma uniform
  in [0, max_noise_std] (0.03), then clipped to [0, 1];
- texture changes: an unsharp-mask filter x + s (x - G_1 * x) with strength s
  uniform in [-max_texture, max_texture] (0.8): s < 0 blurs the fine texture,
  s > 0 sharpens it, without moving any boundary.
Each augmentation is applied with probability `probability` (0.5).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jhseg.data.options import options_from_config
from scipy import ndimage

from jhseg.data.transforms import random_transform

Example = dict[str, np.ndarray]


def regions_below(ucm: np.ndarray, threshold: float) -> np.ndarray:
  """(H, W) int32 labels of the pixels joined by edges of weight < threshold.

  `ucm` is an interpixel map (2H-1, 2W-1) (pixel (i, j) at (2i, 2j), edges
  between). Connected components of 4-adjacent interpixel sites: pixels, and
  the edges that are open (< threshold); corner sites never connect.
  """
  ucm = np.asarray(ucm)
  if ucm.ndim != 2 or ucm.shape[0] % 2 == 0 or ucm.shape[1] % 2 == 0:
    raise ValueError(f"regions_below: ucm must be an interpixel map (2H-1, 2W-1), got "
                     f"shape {ucm.shape}")
  sites = np.zeros(ucm.shape, bool)
  sites[::2, ::2] = True
  sites[::2, 1::2] = ucm[::2, 1::2] < threshold
  sites[1::2, ::2] = ucm[1::2, ::2] < threshold
  labels, _ = ndimage.label(sites)
  return labels[::2, ::2].astype(np.int32)


def nested_cuts(ucm: np.ndarray, levels: Sequence[float]) -> np.ndarray:
  """(K, H, W) label maps, finest first: L_k = regions_below(ucm, levels[k])."""
  return np.stack([regions_below(ucm, level) for level in levels])


def ultrametric_from_cuts(cuts: np.ndarray, levels: Sequence[float]) -> np.ndarray:
  """Interpixel UCM (2H-1, 2W-1) of nested label maps (K, H, W), finest first.

  The formula of `jhseg.grid.nested_labels_to_ultrametric`, w(e) = max_k a_k
  [L_k(p) != L_k(q)], with corners as `jhseg.grid.edges_to_interpixel` (the max
  of their four edges); the tests check both against jhseg.grid. Written in
  NumPy because it runs in the data workers: JAX ops dispatched from those host
  threads compete with the devices' own computations (on CPU they starved an
  all-reduce of the train step into a rendezvous timeout) and would land on the
  accelerator elsewhere.
  """
  cuts = np.asarray(cuts)
  altitudes = np.asarray(levels, np.float32).reshape(-1, 1, 1)
  if cuts.ndim != 3 or cuts.shape[0] != altitudes.shape[0]:
    raise ValueError(f"ultrametric_from_cuts: cuts must be (K, H, W) with K = {len(levels)} "
                     f"levels, got shape {cuts.shape}")
  h = np.max(np.where(cuts[:, :, 1:] != cuts[:, :, :-1], altitudes, 0.0), axis=0)
  v = np.max(np.where(cuts[:, 1:, :] != cuts[:, :-1, :], altitudes, 0.0), axis=0)
  height, width = cuts.shape[1:]
  ucm = np.zeros((2 * height - 1, 2 * width - 1), np.float32)
  ucm[0::2, 1::2] = h
  ucm[1::2, 0::2] = v
  ucm[1::2, 1::2] = np.maximum(np.maximum(h[:-1, :], h[1:, :]), np.maximum(v[:, :-1], v[:, 1:]))
  return ucm


def target_levels(ucm: np.ndarray) -> tuple[float, ...]:
  """The positive levels present in a stored target, ascending."""
  values = np.unique(np.asarray(ucm))
  return tuple(float(v) for v in values[values > 0])


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Ranges of the paper's four augmentations (see the module docstring)."""
  probability: float = 0.5
  max_rotation: float = 10.0       # degrees
  max_distortion: float = 0.1      # radial coefficient k
  max_noise_std: float = 0.03      # on [0, 1] images
  max_texture: float = 0.8         # unsharp-mask strength

  @classmethod
  def from_config(cls, config, *, where: str = "config.data.augment") -> "AugmentConfig":
    """From a mapping (e.g. `config.data.augment`); unknown keys are an error."""
    return options_from_config(cls, config, where=where)


def sampling_grid(shape: tuple[int, int], *, angle_degrees: float = 0.0,
                  distortion: float = 0.0) -> np.ndarray:
  """(2, H, W) source coordinates (row, col) of every output pixel.

  Output pixel p samples the input at R D(p - c) + c, with c the image centre,
  D the radial distortion r -> r (1 + k r^2) (r in half-diagonals) and R the
  rotation by `angle_degrees` (augmentation angles are symmetric, so the sense
  of rotation does not matter).
  """
  height, width = shape
  centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
  rows, cols = np.meshgrid(np.arange(height, dtype=np.float64),
                           np.arange(width, dtype=np.float64), indexing="ij")
  dy, dx = rows - centre[0], cols - centre[1]
  if distortion:
    half_diagonal = max(np.hypot(*centre), 1.0)
    scale = 1.0 + distortion * (dy ** 2 + dx ** 2) / half_diagonal ** 2
    dy, dx = dy * scale, dx * scale
  theta = np.deg2rad(angle_degrees)
  cos, sin = np.cos(theta), np.sin(theta)
  src_y = cos * dy - sin * dx
  src_x = sin * dy + cos * dx
  return np.stack([src_y + centre[0], src_x + centre[1]])


def warp(example: Example, coords: np.ndarray, label_fields: Sequence[str]) -> Example:
  """Resamples `image` bilinearly and `label_fields` and `valid` by nearest neighbour.

  Output pixels whose source lies outside the image become invalid.
  """
  height, width = example["image"].shape[:2]
  out = dict(example)
  image = example["image"]
  out["image"] = np.stack([ndimage.map_coordinates(image[..., c], coords, order=1,
                                                   mode="nearest")
                           for c in range(image.shape[-1])], axis=-1).astype(image.dtype)
  nearest = np.rint(coords).astype(np.int64)
  inside = ((nearest[0] >= 0) & (nearest[0] < height) & (nearest[1] >= 0)
            & (nearest[1] < width))
  rows = np.clip(nearest[0], 0, height - 1)
  cols = np.clip(nearest[1], 0, width - 1)
  for field in label_fields:
    labels = example[field]
    out[field] = labels[..., rows, cols]
  valid = example.get("valid", np.ones((height, width), bool))
  out["valid"] = valid[rows, cols] & inside
  return out


def unsharp(image: np.ndarray, strength: float) -> np.ndarray:
  """x + s (x - G_1 * x) per channel, clipped to [0, 1] (texture change)."""
  blurred = ndimage.gaussian_filter(image, sigma=(1.0, 1.0, 0.0), mode="nearest")
  return np.clip(image + strength * (image - blurred), 0.0, 1.0).astype(image.dtype)


def make_augment(config: AugmentConfig):
  """A random transform for examples with `image` (float [0, 1]) and `ucm` (interpixel).

  Optional `valid` (H, W) bool is carried along (created if absent). Only
  `image`, `ucm` and `valid` change; other fields are left as they are, so
  apply it to training examples that do not need instance maps.
  """

  @random_transform
  def augment(example: Example, rng: np.random.Generator) -> Example:
    example = dict(example)
    height, width = example["image"].shape[:2]
    example.setdefault("valid", np.ones((height, width), bool))
    apply = rng.random(4) < config.probability
    angle = rng.uniform(-config.max_rotation, config.max_rotation) if apply[0] else 0.0
    distortion = (rng.uniform(-config.max_distortion, config.max_distortion)
                  if apply[1] else 0.0)
    if angle or distortion:
      levels = target_levels(example["ucm"])
      example["cuts"] = nested_cuts(example["ucm"], levels)
      coords = sampling_grid((height, width), angle_degrees=angle, distortion=distortion)
      example = warp(example, coords, ("cuts",))
      cuts = example.pop("cuts")
      example["ucm"] = (ultrametric_from_cuts(cuts, levels) if levels
                        else np.zeros_like(example["ucm"]))
    image = example["image"]
    if apply[2]:
      sigma = rng.uniform(0.0, config.max_noise_std)
      image = np.clip(image + rng.normal(0.0, sigma, image.shape), 0.0, 1.0).astype(image.dtype)
    if apply[3]:
      image = unsharp(image, rng.uniform(-config.max_texture, config.max_texture))
    example["image"] = image
    return example

  return augment
