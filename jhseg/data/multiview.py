"""HSG's multiple augmented views of one training image, with corresponding regions.

Ke et al., CVPR 2022, sec. 3.1 co-segment several views of the same image: each view
is an independent random augmentation, and the image's coherent regions G_e
(`jhseg.data.coherent_regions`) are carried into every view by the same spatial
transform (nearest neighbour), so a region id names the same image region in all views.

Per view, in the order of the authors' `SelfsupListDataset` (hsg/data), with their
defaults (confirmed in twke18/HSG):

1. horizontal flip with probability 0.5;
2. rescale by r ~ U(0.5, 1.5) to (int(r H), int(r W));
3. crop `crop_size` x `crop_size` at a uniform position; where the rescaled image is
   smaller than the crop it is padded at the bottom/right (their 'left_top' padding)
   with the ImageNet mean colour (their image pad = pixel mean); labels there are -1
   (theirs 255);
4. colour jitter with probability 0.8: brightness, contrast, saturation factors
   ~ U(0.6, 1.4) and a hue shift ~ U(-0.1, 0.1) turns, in random order
   (torchvision ColorJitter(0.4, 0.4, 0.4, 0.1));
5. grayscale with probability 0.2 (ITU-R 601 luma 0.299 R + 0.587 G + 0.114 B);
6. Gaussian blur: their 5x5 kernel w(x, y) ~ exp(-(x^2 + y^2) / s^2) on x, y in
   {-2..2}, s ~ U(0.1, 5), reflect-101 borders. Their dataset applies it with
   probability 0.5 only when `random_blur=True`, which their training script never
   sets: `blur_probability` defaults to 0 (set 0.5 for their optional setting).
They use two views; crops are 224 (MSCOCO stage 1), 448 (stage 2, Cityscapes).

Geometry: view pixel (r, c) samples the image at continuous (row, col) =
A [r, c, 1]^T with A = `view_transforms[v]` (2 x 3; pixel centres at integers,
half-pixel-aligned scaling, col scale negative when flipped). The image is sampled
bilinearly (clamped at the border; no antialiasing, as OpenCV's INTER_LINEAR), label
maps at the nearest pixel round(A [r, c, 1]); a view pixel is outside the image iff
that pixel is out of bounds. Photometric steps act on the whole view, padding
included, as theirs (computed on floats instead of their uint8 PIL round trip).

Output fields (fixed shapes, so examples batch): `views` (V, S, S, 3) float32 in
[0, 1], `view_regions` (V, S, S) int32 (the input's region ids, -1 outside),
`view_transforms` (V, 2, 3) float32, and `view_<name>` (V, ..., S, S) int32 for every
`label_fields` name ((..., H, W) integer maps, e.g. semantic classes or stacked
object/part ids; values copied, -1 outside, so a void label such as VOC's 255 stays); `keep_fields` are copied unchanged; all other
fields (the variable-size image and maps) are dropped.

Usage (training transforms of a task; G_e first, once per image):

    augment = config.data.augment
    transforms = [CoherentRegions.from_config(augment.coherent_regions),
                  make_multiview(MultiviewConfig.from_config(augment.multiview))]
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from matplotlib import colors as mcolors
from scipy import ndimage

from jhseg.data.coherent_regions import as_float_image
from jhseg.data.options import options_from_config
from jhseg.data.transforms import random_transform

Example = dict[str, np.ndarray]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclasses.dataclass(frozen=True)
class MultiviewConfig:
  """Augmentation of each view (defaults: the authors' code, see the module docstring)."""
  num_views: int = 2
  crop_size: int = 224
  min_scale: float = 0.5
  max_scale: float = 1.5
  flip_probability: float = 0.5
  jitter_probability: float = 0.8
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.4
  hue: float = 0.1
  grayscale_probability: float = 0.2
  blur_probability: float = 0.0
  min_blur_sigma: float = 0.1
  max_blur_sigma: float = 5.0
  pad_value: tuple[float, float, float] = IMAGENET_MEAN
  regions_field: str = "regions"
  label_fields: tuple[str, ...] = ()
  keep_fields: tuple[str, ...] = ()

  def __post_init__(self):
    if self.num_views < 1 or self.crop_size < 1:
      raise ValueError(f"MultiviewConfig: num_views and crop_size must be >= 1; got "
                       f"{self.num_views}, {self.crop_size}")
    if not 0 < self.min_scale <= self.max_scale:
      raise ValueError(f"MultiviewConfig: need 0 < min_scale <= max_scale; got "
                       f"{self.min_scale}, {self.max_scale}")

  @classmethod
  def from_config(cls, config, *, where: str = "config.data.augment.multiview"
                  ) -> "MultiviewConfig":
    """From a mapping (e.g. `config.data.augment.multiview`); unknown keys are an error."""
    return options_from_config(cls, config, where=where)


# --- Geometry. ---


def sample_view_transform(rng: np.random.Generator, shape: tuple[int, int],
                          config: MultiviewConfig) -> np.ndarray:
  """(2, 3) affine map view pixel (r, c, 1) -> image (row, col) of one random view."""
  height, width = shape
  flip = rng.random() < config.flip_probability
  ratio = rng.uniform(config.min_scale, config.max_scale)
  new_h, new_w = max(int(ratio * height), 1), max(int(ratio * width), 1)
  size = config.crop_size
  top = int(np.floor(rng.uniform(0, max(new_h, size) - size)))
  left = int(np.floor(rng.uniform(0, max(new_w, size) - size)))
  return view_transform(shape, (new_h, new_w), top=top, left=left, flip=flip)


def view_transform(shape: tuple[int, int], scaled_shape: tuple[int, int], *, top: int, left: int,
                   flip: bool) -> np.ndarray:
  """Affine map of a view: flip, rescale `shape` -> `scaled_shape`, crop at (top, left).

  Rescaling aligns pixel areas (row_src + 1/2 = (row_scaled + 1/2) H / H'); a flip maps
  col to W - 1 - col.
  """
  (height, width), (new_h, new_w) = shape, scaled_shape
  sy, sx = height / new_h, width / new_w
  transform = np.array([[sy, 0.0, (top + 0.5) * sy - 0.5],
                        [0.0, sx, (left + 0.5) * sx - 0.5]])
  if flip:
    transform[1] = [0.0, -sx, width - 1 - transform[1, 2]]
  return transform


def source_coordinates(transform: np.ndarray, size: int) -> np.ndarray:
  """(2, S, S) continuous image coordinates of the view's pixels."""
  rows, cols = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64),
                           indexing="ij")
  return np.einsum("ij,jrc->irc", transform, np.stack([rows, cols, np.ones_like(rows)]))


def nearest_pixels(coords: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(rows, cols) of the nearest image pixel, clipped, and the mask of in-bounds ones."""
  nearest = np.floor(coords + 0.5).astype(np.int64)
  inside = ((nearest[0] >= 0) & (nearest[0] < shape[0]) & (nearest[1] >= 0)
            & (nearest[1] < shape[1]))
  return np.clip(nearest[0], 0, shape[0] - 1), np.clip(nearest[1], 0, shape[1] - 1), inside


def warp_labels(labels: np.ndarray, coords: np.ndarray, *, fill: int = -1) -> np.ndarray:
  """Nearest-neighbour resampling of (..., H, W) label maps; `fill` outside the image."""
  rows, cols, inside = nearest_pixels(coords, labels.shape[-2:])
  return np.where(inside, labels[..., rows, cols], fill).astype(np.int32)


def warp_image(image: np.ndarray, coords: np.ndarray, pad_value: Sequence[float]) -> np.ndarray:
  """Bilinear resampling of an (H, W, 3) image; `pad_value` outside the image."""
  _, _, inside = nearest_pixels(coords, image.shape[:2])
  out = np.stack([ndimage.map_coordinates(image[..., c], coords, order=1, mode="nearest")
                  for c in range(image.shape[-1])], axis=-1)
  return np.where(inside[..., None], out, np.asarray(pad_value, np.float32)).astype(np.float32)


# --- Photometric steps (float images in [0, 1]). ---


def grayscale(image: np.ndarray) -> np.ndarray:
  """Luma replicated on the three channels."""
  return np.repeat(image @ LUMA, 3).reshape(image.shape).astype(np.float32)


def _blend(image, other, factor):
  return np.clip(factor * image + (1.0 - factor) * other, 0.0, 1.0).astype(np.float32)


def adjust_brightness(image, factor):
  return _blend(image, 0.0, factor)


def adjust_contrast(image, factor):
  return _blend(image, float(np.mean(image @ LUMA)), factor)


def adjust_saturation(image, factor):
  return _blend(image, grayscale(image), factor)


def adjust_hue(image, shift):
  """Rotates the hue by `shift` turns (in [-0.5, 0.5])."""
  hsv = mcolors.rgb_to_hsv(np.clip(image, 0.0, 1.0))
  hsv[..., 0] = np.mod(hsv[..., 0] + shift, 1.0)
  return mcolors.hsv_to_rgb(hsv).astype(np.float32)


def colour_jitter(image: np.ndarray, rng: np.random.Generator, config: MultiviewConfig) -> np.ndarray:
  """The four adjustments with random factors, in random order (as torchvision's ColorJitter)."""
  steps = (
      (adjust_brightness, rng.uniform(1 - config.brightness, 1 + config.brightness)),
      (adjust_contrast, rng.uniform(1 - config.contrast, 1 + config.contrast)),
      (adjust_saturation, rng.uniform(1 - config.saturation, 1 + config.saturation)),
      (adjust_hue, rng.uniform(-config.hue, config.hue)),
  )
  for k in rng.permutation(len(steps)):
    fn, value = steps[k]
    image = fn(image, value)
  return image


def blur_kernel(sigma: float) -> np.ndarray:
  """The authors' 1-D factor of the 5x5 blur: exp(-x^2 / sigma^2), x in {-2..2}, normalised."""
  weights = np.exp(-np.arange(-2.0, 3.0) ** 2 / sigma ** 2)
  return weights / weights.sum()


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
  kernel = blur_kernel(sigma)
  out = ndimage.correlate1d(image, kernel, axis=0, mode="mirror")
  return ndimage.correlate1d(out, kernel, axis=1, mode="mirror").astype(np.float32)


def photometric(image: np.ndarray, rng: np.random.Generator, config: MultiviewConfig) -> np.ndarray:
  if rng.random() < config.jitter_probability:
    image = colour_jitter(image, rng, config)
  if rng.random() < config.grayscale_probability:
    image = grayscale(image)
  if rng.random() < config.blur_probability:
    image = blur(image, rng.uniform(config.min_blur_sigma, config.max_blur_sigma))
  return image


# --- The transform. ---


def _label_map(example: Example, field: str, shape: tuple[int, int], *,
               leading_dims: bool) -> np.ndarray:
  if field not in example:
    raise KeyError(f"multiview: the example has no field {field!r} (fields: {sorted(example)})")
  labels = np.asarray(example[field])
  ok_shape = labels.shape[-2:] == shape and (leading_dims or labels.ndim == 2)
  if not ok_shape or not np.issubdtype(labels.dtype, np.integer):
    expected = "(..., H, W)" if leading_dims else "(H, W)"
    raise ValueError(f"field {field!r}: expected integer {expected} label maps with (H, W) = "
                     f"{shape} as the image; got {labels.dtype} {labels.shape}")
  return labels


def make_multiview(config: MultiviewConfig):
  """A random transform: example with `image` and `config.regions_field` -> V views."""

  @random_transform
  def multiview(example: Example, rng: np.random.Generator) -> Example:
    if "image" not in example:
      raise KeyError(f"multiview: the example has no field 'image' (fields: {sorted(example)})")
    image = as_float_image(example["image"])
    shape = image.shape[:2]
    label_maps = {config.regions_field: _label_map(example, config.regions_field, shape,
                                                   leading_dims=False)}
    for name in config.label_fields:
      label_maps[name] = _label_map(example, name, shape, leading_dims=True)
    out = {name: example[name] for name in config.keep_fields}
    views, transforms = [], []
    warped = {name: [] for name in label_maps}
    for _ in range(config.num_views):
      transform = sample_view_transform(rng, shape, config)
      coords = source_coordinates(transform, config.crop_size)
      views.append(photometric(warp_image(image, coords, config.pad_value), rng, config))
      for name, labels in label_maps.items():
        warped[name].append(warp_labels(labels, coords))
      transforms.append(transform)
    out["views"] = np.stack(views).astype(np.float32)
    out["view_regions"] = np.stack(warped.pop(config.regions_field))
    out["view_transforms"] = np.stack(transforms).astype(np.float32)
    for name, maps in warped.items():
      out[f"view_{name}"] = np.stack(maps)
    return out

  return multiview
