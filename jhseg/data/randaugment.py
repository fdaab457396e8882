"""RandAugment and random erasing on the host, as DeiT trains (and CAST with it).

CAST's supervised training (Ke, Mo, Yu, ICLR 2024, appendix E.4 Table 12: "RandAug(9,
0.5)") uses DeiT's `create_transform`, i.e. timm's `rand-m9-mstd0.5-inc1` (read in timm's
`auto_augment.py` for the operations and their ranges):

  2 operations drawn uniformly with replacement from the 15 "increasing" ones below, each
  applied with probability 0.5 at magnitude m ~ N(9, 0.5) clipped to [0, 10]; signed
  operations are negated with probability 0.5. With m / 10 = t:

  auto_contrast, equalize, invert                       no magnitude
  rotate            angle 30 t degrees (counter-clockwise)
  posterize         keep 4 - int(4 t) bits
  solarize          invert values >= 256 - int(256 t)
  solarize_add      add int(110 t) to values < 128 (clipped at 255)
  color, contrast, brightness, sharpness   PIL's blend with factor 1 + 0.9 t (signed)
  shear_x, shear_y  shear 0.3 t
  translate_x, translate_y   0.45 t of the image width / height, in pixels

  geometric operations fill uncovered pixels with the ImageNet mean (124, 116, 104).

Random erasing (Zhong et al. 2020; timm's `RandomErasing`, DeiT's `--reprob 0.25
--remode pixel`): with probability 0.25 a box of area fraction in [0.02, 1/3] and
log-uniform aspect in [0.3, 1/0.3] (up to 10 draws until it fits) is replaced by
per-pixel N(0, 1) noise in the *normalised* image.

Images are uint8 (H, W, 3) for RandAugment (the PIL operations are defined on uint8);
`rng` is a NumPy Generator so the engine's per-example seeds make them reproducible.

Faithfulness:
  * the affine operations use OpenCV's warpAffine (bicubic, like DeiT's PIL bicubic,
    rotation about ((W-1)/2, (H-1)/2)); PIL rotates about (W/2, H/2): half a pixel apart.
  * PIL's enhance blends round half away from zero via its C code; here values are
    rounded with NumPy's round-half-to-even before the uint8 cast (differs by at most 1
    on exact halves).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

FILL = (124, 116, 104)  # round(255 * ImageNet mean), timm's `img_mean`
MAX_MAGNITUDE = 10.0


# ----------------------------------------------------------------------------- operations


def _to_uint8(x: np.ndarray) -> np.ndarray:
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _blend(degenerate: np.ndarray, image: np.ndarray, factor: float) -> np.ndarray:
  """PIL's Image.blend(degenerate, image, factor) = degenerate + factor (image - degenerate)."""
  d = degenerate.astype(np.float32)
  return _to_uint8(d + factor * (image.astype(np.float32) - d))


def _grayscale(image: np.ndarray) -> np.ndarray:
  """PIL's 'L' conversion (ITU-R 601-2: 299 R + 587 G + 114 B, / 1000, rounded)."""
  weights = np.array([299, 587, 114], np.int64)
  return ((image.astype(np.int64) @ weights + 500) // 1000).astype(np.uint8)


def auto_contrast(image: np.ndarray) -> np.ndarray:
  """Each channel stretched linearly from its [min, max] to [0, 255] (constant: unchanged)."""
  out = image.copy()
  for c in range(image.shape[-1]):
    lo, hi = int(image[..., c].min()), int(image[..., c].max())
    if hi > lo:
      scale = 255.0 / (hi - lo)
      lut = np.clip(np.floor((np.arange(256) - lo) * scale), 0, 255).astype(np.uint8)
      out[..., c] = lut[image[..., c]]
  return out


def equalize(image: np.ndarray) -> np.ndarray:
  """PIL's ImageOps.equalize per channel: LUT from the cumulative histogram."""
  out = image.copy()
  for c in range(image.shape[-1]):
    hist = np.bincount(image[..., c].ravel(), minlength=256)
    nonzero = hist[hist > 0]
    if len(nonzero) <= 1:
      continue
    step = (int(hist.sum()) - int(nonzero[-1])) // 255
    if not step:
      continue
    cumulative = np.concatenate([[0], np.cumsum(hist)[:-1]])
    lut = np.clip((step // 2 + cumulative) // step, 0, 255).astype(np.uint8)
    out[..., c] = lut[image[..., c]]
  return out


def invert(image: np.ndarray) -> np.ndarray:
  return (255 - image).astype(np.uint8)


def posterize(image: np.ndarray, bits: int) -> np.ndarray:
  if bits >= 8:
    return image
  mask = ~np.uint8(2 ** (8 - max(bits, 0)) - 1)
  return image & mask


def solarize(image: np.ndarray, threshold: int) -> np.ndarray:
  return np.where(image >= threshold, 255 - image, image).astype(np.uint8)


def solarize_add(image: np.ndarray, add: int, threshold: int = 128) -> np.ndarray:
  added = np.minimum(image.astype(np.int32) + add, 255).astype(np.uint8)
  return np.where(image < threshold, added, image)


def color(image: np.ndarray, factor: float) -> np.ndarray:
  gray = _grayscale(image)
  return _blend(np.repeat(gray[..., None], 3, axis=-1), image, factor)


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
  """Blend with the mean grey level (PIL: int(mean of the 'L' image + 0.5))."""
  mean = int(_grayscale(image).mean() + 0.5)
  return _blend(np.full_like(image, mean), image, factor)


def brightness(image: np.ndarray, factor: float) -> np.ndarray:
  return _blend(np.zeros_like(image), image, factor)


def sharpness(image: np.ndarray, factor: float) -> np.ndarray:
  """Blend with PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13; border pixels kept)."""
  x = image.astype(np.float32)
  smooth = x.copy()
  if image.shape[0] > 2 and image.shape[1] > 2:
    acc = 4.0 * x[1:-1, 1:-1]
    for dy in (-1, 0, 1):
      for dx in (-1, 0, 1):
        acc = acc + x[1 + dy:x.shape[0] - 1 + dy, 1 + dx:x.shape[1] - 1 + dx]
    smooth[1:-1, 1:-1] = np.round(acc / 13.0)
  return _blend(smooth, image, factor)


def affine(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """Output pixel (x, y) sampled at matrix @ (x, y, 1) of the input (PIL's `transform`
  convention), bicubic, filled with `FILL` outside."""
  import cv2  # pylint: disable=g-import-not-at-top  (optional heavy import)
  height, width = image.shape[:2]
  return cv2.warpAffine(image, np.asarray(matrix, np.float64)[:2], (width, height),
                        flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=FILL)


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
  """Counter-clockwise rotation about the centre."""
  height, width = image.shape[:2]
  cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
  a = math.radians(degrees)
  cos, sin = math.cos(a), math.sin(a)
  # Inverse map: output -> input is a clockwise rotation (y grows downwards).
  matrix = [[cos, -sin, cx - cos * cx + sin * cy], [sin, cos, cy - sin * cx - cos * cy]]
  return affine(image, matrix)


def shear_x(image: np.ndarray, shear: float) -> np.ndarray:
  return affine(image, [[1, shear, 0], [0, 1, 0]])


def shear_y(image: np.ndarray, shear: float) -> np.ndarray:
  return affine(image, [[1, 0, 0], [shear, 1, 0]])


def translate_x(image: np.ndarray, pixels: float) -> np.ndarray:
  return affine(image, [[1, 0, pixels], [0, 1, 0]])


def translate_y(image: np.ndarray, pixels: float) -> np.ndarray:
  return affine(image, [[1, 0, 0], [0, 1, pixels]])


# ----------------------------------------------------------------------------- RandAugment


def _signed(value: float, rng: np.random.Generator) -> float:
  return -value if rng.random() < 0.5 else value


# name -> (operation, argument from (magnitude fraction t, image, rng)); the argument is
# None for operations without magnitude.
OPERATIONS: dict[str, tuple[Callable, Callable | None]] = {
    "auto_contrast": (auto_contrast, None),
    "equalize": (equalize, None),
    "invert": (invert, None),
    "rotate": (rotate, lambda t, im, rng: _signed(30.0 * t, rng)),
    "posterize": (posterize, lambda t, im, rng: 4 - int(4 * t)),
    "solarize": (solarize, lambda t, im, rng: 256 - int(256 * t)),
    "solarize_add": (solarize_add, lambda t, im, rng: int(110 * t)),
    "color": (color, lambda t, im, rng: 1.0 + _signed(0.9 * t, rng)),
    "contrast": (contrast, lambda t, im, rng: 1.0 + _signed(0.9 * t, rng)),
    "brightness": (brightness, lambda t, im, rng: 1.0 + _signed(0.9 * t, rng)),
    "sharpness": (sharpness, lambda t, im, rng: 1.0 + _signed(0.9 * t, rng)),
    "shear_x": (shear_x, lambda t, im, rng: _signed(0.3 * t, rng)),
    "shear_y": (shear_y, lambda t, im, rng: _signed(0.3 * t, rng)),
    "translate_x": (translate_x, lambda t, im, rng: _signed(0.45 * t * im.shape[1], rng)),
    "translate_y": (translate_y, lambda t, im, rng: _signed(0.45 * t * im.shape[0], rng)),
}


@dataclasses.dataclass(frozen=True)
class RandAugmentOptions:
  """timm's `rand-m9-mstd0.5-inc1` (the defaults)."""
  num_ops: int = 2
  magnitude: float = 9.0
  magnitude_std: float = 0.5
  probability: float = 0.5
  operations: tuple[str, ...] = tuple(OPERATIONS)

  def __post_init__(self):
    unknown = sorted(set(self.operations) - set(OPERATIONS))
    if unknown:
      raise ValueError(f"RandAugmentOptions.operations: unknown {unknown}; valid names: "
                       f"{sorted(OPERATIONS)}")
    if not 0 <= self.magnitude <= MAX_MAGNITUDE:
      raise ValueError(f"RandAugmentOptions.magnitude={self.magnitude} must be in [0, 10]")


def apply_operation(name: str, image: np.ndarray, magnitude: float,
                    rng: np.random.Generator) -> np.ndarray:
  """One named operation at `magnitude` in [0, 10] (signs drawn from `rng`)."""
  if name not in OPERATIONS:
    raise ValueError(f"unknown RandAugment operation {name!r}; valid names: {sorted(OPERATIONS)}")
  operation, argument = OPERATIONS[name]
  if argument is None:
    return operation(image)
  return operation(image, argument(magnitude / MAX_MAGNITUDE, image, rng))


def rand_augment(image: np.ndarray, rng: np.random.Generator,
                 options: RandAugmentOptions = RandAugmentOptions()) -> np.ndarray:
  """uint8 (H, W, 3) -> uint8 (H, W, 3): `num_ops` random operations (module docstring)."""
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"rand_augment: expected a uint8 (H, W, 3) image; got {image.dtype} "
                     f"{image.shape}")
  names = rng.choice(len(options.operations), size=options.num_ops, replace=True)
  for index in names:
    if rng.random() >= options.probability:
      continue
    magnitude = options.magnitude
    if options.magnitude_std > 0:
      magnitude = rng.normal(magnitude, options.magnitude_std)
    magnitude = float(np.clip(magnitude, 0.0, MAX_MAGNITUDE))
    image = apply_operation(options.operations[index], image, magnitude, rng)
  return np.ascontiguousarray(image)


# ----------------------------------------------------------------------------- random erasing


@dataclasses.dataclass(frozen=True)
class ErasingOptions:
  """timm's RandomErasing as DeiT sets it (mode 'pixel', one box)."""
  probability: float = 0.25
  min_area: float = 0.02
  max_area: float = 1.0 / 3.0
  min_aspect: float = 0.3
  max_aspect: float = 1.0 / 0.3


def random_erase(image: np.ndarray, rng: np.random.Generator,
                 options: ErasingOptions = ErasingOptions()) -> np.ndarray:
  """Normalised float (H, W, C) -> a copy with at most one box of N(0, 1) noise."""
  if rng.random() >= options.probability:
    return image
  height, width = image.shape[:2]
  log_aspect = (math.log(options.min_aspect), math.log(options.max_aspect))
  for _ in range(10):
    area = rng.uniform(options.min_area, options.max_area) * height * width
    aspect = math.exp(rng.uniform(*log_aspect))
    h = int(round(math.sqrt(area * aspect)))
    w = int(round(math.sqrt(area / aspect)))
    if w < width and h < height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      out = image.copy()
      out[top:top + h, left:left + w] = rng.standard_normal((h, w, image.shape[-1]))
      return out.astype(image.dtype)
  return image
