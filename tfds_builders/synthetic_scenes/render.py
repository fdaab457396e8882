"""Pure NumPy renderer of synthetic two-level scenes (objects made of parts).

A scene is a textured background and 1..`max_objects` objects drawn in painter's
order (objects whose bottom is lower in the image are nearer and drawn later, so
they occlude the others). Each object class has a fixed template of parts given
as unions of simple shapes in object-local coordinates; each part class has its
own colour, texture and noise, so part boundaries are visible in the image and
coincide exactly with the label boundaries (no anti-aliasing).

Object-local coordinates, in units of the object height `s` and centred on the
object centre (cx, cy):  u = ±(x + 1/2 - cx) / s  (sign = horizontal flip),
v = (y + 1/2 - cy) / s, so v = -1/2 is the top and v = +1/2 the bottom.

Everything is vectorised over the pixel grid; a 64x64 scene renders in about a
millisecond. The random stream is `np.random.default_rng([seed, index])`, so
scene `index` is the same whatever order scenes are rendered in.
"""
import dataclasses
from typing import Callable, NamedTuple

import numpy as np

from tfds_builders.synthetic_scenes import label_tree

# ----------------------------------------------------------------------------- shapes


@dataclasses.dataclass(frozen=True)
class Rect:
  """Axis-aligned rectangle u0 <= u < u1, v0 <= v < v1."""
  u0: float
  u1: float
  v0: float
  v1: float

  def mask(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u >= self.u0) & (u < self.u1) & (v >= self.v0) & (v < self.v1)


@dataclasses.dataclass(frozen=True)
class Ellipse:
  """Ellipse centred at (cu, cv) with semi-axes (ru, rv)."""
  cu: float
  cv: float
  ru: float
  rv: float

  def mask(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return ((u - self.cu) / self.ru) ** 2 + ((v - self.cv) / self.rv) ** 2 <= 1.0


@dataclasses.dataclass(frozen=True)
class Triangle:
  """Isosceles triangle, apex (0, apex_v) up, base at v = base_v of half width `half_base`."""
  apex_v: float
  base_v: float
  half_base: float

  def mask(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    t = (v - self.apex_v) / (self.base_v - self.apex_v)  # 0 at the apex, 1 at the base
    return (t >= 0.0) & (t < 1.0) & (np.abs(u) <= self.half_base * t)


Shape = Rect | Ellipse | Triangle


@dataclasses.dataclass(frozen=True)
class PartTemplate:
  """One part instance of an object template: its class and the union of its shapes."""
  part_class: str
  shapes: tuple[Shape, ...]

  def mask(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = np.zeros(u.shape, bool)
    for shape in self.shapes:
      out |= shape.mask(u, v)
    return out


@dataclasses.dataclass(frozen=True)
class ObjectTemplate:
  """An object class: its parts in drawing order and its height range (fraction of image)."""
  parts: tuple[PartTemplate, ...]
  height_range: tuple[float, float]


# Parts are drawn in the listed order, later parts over earlier ones (a window
# over the body, the head over the torso's top). Every template covers its own
# centre (u, v) = (0, 0), so the nearest object of a scene is always visible.
OBJECT_TEMPLATES: dict[str, ObjectTemplate] = {
    "figure": ObjectTemplate(
        parts=(
            PartTemplate("figure/torso", (Rect(-0.13, 0.13, -0.27, 0.12),)),
            PartTemplate("figure/arm", (Rect(-0.24, -0.13, -0.25, 0.08),)),
            PartTemplate("figure/arm", (Rect(0.13, 0.24, -0.25, 0.08),)),
            PartTemplate("figure/leg", (Rect(-0.12, 0.0, 0.12, 0.5),)),
            PartTemplate("figure/leg", (Rect(0.0, 0.12, 0.12, 0.5),)),
            PartTemplate("figure/head", (Ellipse(0.0, -0.38, 0.1, 0.12),)),
        ),
        height_range=(0.35, 0.65)),
    "vehicle": ObjectTemplate(
        parts=(
            PartTemplate("vehicle/body", (Rect(-1.0, 1.0, -0.12, 0.3),  # chassis
                                          Rect(-0.55, 0.4, -0.5, -0.12))),  # cabin
            PartTemplate("vehicle/window", (Rect(-0.47, -0.1, -0.42, -0.17),)),
            PartTemplate("vehicle/window", (Rect(-0.02, 0.32, -0.42, -0.17),)),
            PartTemplate("vehicle/wheel", (Ellipse(-0.6, 0.28, 0.22, 0.22),)),
            PartTemplate("vehicle/wheel", (Ellipse(0.6, 0.28, 0.22, 0.22),)),
        ),
        height_range=(0.2, 0.35)),
    "tree": ObjectTemplate(
        parts=(
            PartTemplate("tree/trunk", (Rect(-0.09, 0.09, -0.1, 0.5),)),
            PartTemplate("tree/crown", (Ellipse(0.0, -0.22, 0.36, 0.28),)),
        ),
        height_range=(0.4, 0.75)),
    "house": ObjectTemplate(
        parts=(
            PartTemplate("house/wall", (Rect(-0.5, 0.5, -0.1, 0.5),)),
            PartTemplate("house/roof", (Triangle(-0.5, -0.1, 0.62),)),
            PartTemplate("house/door", (Rect(-0.1, 0.1, 0.18, 0.5),)),
        ),
        height_range=(0.3, 0.55)),
}

# ----------------------------------------------------------------------------- textures

# A texture maps (rng, y, x) pixel-centre grids to a pattern in about [-1, 1].
Texture = Callable[[np.random.Generator, np.ndarray, np.ndarray], np.ndarray]


def flat(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
  del rng
  return np.zeros(np.broadcast_shapes(y.shape, x.shape))


def stripes(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
  """Sinusoidal stripes, random orientation, period 3..6 px."""
  angle = rng.uniform(0, np.pi)
  period = rng.uniform(3.0, 6.0)
  return np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period
                + rng.uniform(0, 2 * np.pi))


def checker(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
  """Square checkerboard of random period 3..6 px."""
  period = rng.uniform(3.0, 6.0)
  phase = rng.uniform(0, 2 * np.pi, 2)
  return np.sign(np.sin(np.pi * x / period + phase[0]) * np.sin(np.pi * y / period + phase[1]))


def blobs(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
  """Smooth blotches: the mean of three low-frequency plane waves."""
  angles = rng.uniform(0, np.pi, 3)
  periods = rng.uniform(6.0, 14.0, 3)
  phases = rng.uniform(0, 2 * np.pi, 3)
  waves = [np.sin(2 * np.pi * (x * np.cos(a) + y * np.sin(a)) / p + f)
           for a, p, f in zip(angles, periods, phases)]
  return sum(waves) / np.sqrt(3.0)


def speckle(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
  """Independent per-pixel noise."""
  return np.clip(rng.standard_normal(np.broadcast_shapes(y.shape, x.shape)), -2.0, 2.0) / 2.0


@dataclasses.dataclass(frozen=True)
class Appearance:
  """Colour model of a part class: rgb * (1 + contrast * texture) + N(0, noise)."""
  rgb: tuple[float, float, float]
  texture: Texture
  contrast: float
  noise: float


PART_APPEARANCE: dict[str, Appearance] = {
    "figure/head": Appearance((0.93, 0.74, 0.58), flat, 0.0, 0.02),
    "figure/torso": Appearance((0.82, 0.16, 0.18), stripes, 0.35, 0.03),
    "figure/arm": Appearance((0.98, 0.62, 0.2), speckle, 0.25, 0.02),
    "figure/leg": Appearance((0.16, 0.22, 0.62), checker, 0.3, 0.03),
    "vehicle/body": Appearance((0.2, 0.5, 0.88), blobs, 0.2, 0.03),
    "vehicle/window": Appearance((0.78, 0.92, 0.97), flat, 0.0, 0.02),
    "vehicle/wheel": Appearance((0.12, 0.12, 0.12), speckle, 0.5, 0.03),
    "tree/trunk": Appearance((0.46, 0.29, 0.12), stripes, 0.3, 0.03),
    "tree/crown": Appearance((0.16, 0.62, 0.2), blobs, 0.35, 0.04),
    "house/wall": Appearance((0.88, 0.82, 0.6), checker, 0.12, 0.02),
    "house/roof": Appearance((0.62, 0.16, 0.1), stripes, 0.3, 0.03),
    "house/door": Appearance((0.36, 0.2, 0.1), flat, 0.0, 0.02),
}

_COLOUR_JITTER = 0.06
_SENSOR_NOISE = 0.015

# ----------------------------------------------------------------------------- scenes


class Scene(NamedTuple):
  """One rendered scene; all maps are (H, W)."""
  image: np.ndarray          # uint8 (H, W, 3)
  instances: np.ndarray      # int32, object instance ids 1..K in painter's order, 0 = background
  parts: np.ndarray          # int32, part instance ids 1..P, 0 = background
  object_class: np.ndarray   # int32, index into label_tree.OBJECT_CLASSES
  part_class: np.ndarray     # int32, index into label_tree.PART_CLASSES
  label: int                 # object class of the largest visible object (0 if none)


def _textured(rng: np.random.Generator, look: Appearance, y: np.ndarray, x: np.ndarray
              ) -> np.ndarray:
  """(H, W, 3) colour field of one appearance with per-instance colour jitter."""
  rgb = np.asarray(look.rgb) + rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, 3)
  pattern = look.texture(rng, y, x)[..., None]
  noise = rng.standard_normal(pattern.shape[:2] + (3,)) * look.noise
  return rgb * (1.0 + look.contrast * pattern) + noise


def _background(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, size: int) -> np.ndarray:
  """Muted vertical gradient between two greyish colours, with blotches and speckle."""
  top, bottom = (rng.uniform(0.35, 0.7) + rng.uniform(-0.08, 0.08, 3) for _ in range(2))
  t = (y / size)[..., None]
  base = (1 - t) * top + t * bottom
  look = Appearance((0.0, 0.0, 0.0), blobs, 0.0, 0.03)
  return base * (1.0 + 0.15 * blobs(rng, y, x)[..., None]) + _textured(rng, look, y, x)


def _consecutive(ids: np.ndarray) -> np.ndarray:
  """Relabels the non-zero ids present to 1..n keeping their order; 0 stays 0."""
  present, inverse = np.unique(ids, return_inverse=True)
  offset = 0 if present[0] == 0 else 1
  return (inverse.reshape(ids.shape) + offset).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where one object of class `object_class` is drawn: centre (cy, cx) and height in pixels."""
  object_class: str
  centre: tuple[float, float]
  height: float
  flip: bool = False

  def part_masks(self, y: np.ndarray, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(part class, boolean mask) of each part of the template, in drawing order, unoccluded."""
    if self.object_class not in OBJECT_TEMPLATES:
      raise KeyError(f"Placement: unknown object class {self.object_class!r}; valid classes: "
                     f"{', '.join(OBJECT_TEMPLATES)}")
    u = (-1.0 if self.flip else 1.0) * (x - self.centre[1]) / self.height
    v = (y - self.centre[0]) / self.height
    template = OBJECT_TEMPLATES[self.object_class]
    return [(part.part_class, part.mask(u, v)) for part in template.parts]


def sample_placements(rng: np.random.Generator, *, image_size: int, max_objects: int
                      ) -> list[Placement]:
  """1..max_objects random objects, sorted far to near (by the height of their bottom)."""
  names = list(OBJECT_TEMPLATES)
  num_objects = rng.integers(1, max_objects + 1)
  classes = rng.integers(0, len(names), num_objects)
  heights = np.array([rng.uniform(*OBJECT_TEMPLATES[names[c]].height_range) for c in classes])
  heights *= image_size
  centres = rng.uniform(0.1, 0.9, (num_objects, 2)) * image_size  # (cy, cx)
  flips = rng.random(num_objects) < 0.5
  depth_order = np.argsort(centres[:, 0] + heights / 2, kind="stable")  # far (high) first
  return [Placement(names[classes[k]], (float(centres[k, 0]), float(centres[k, 1])),
                    float(heights[k]), bool(flips[k])) for k in depth_order]


def paint(placements: list[Placement], *, image_size: int, rng: np.random.Generator,
          background: np.ndarray | None = None) -> Scene:
  """Draws `placements` in painter's order (later ones occlude earlier ones).

  Args:
    placements: objects, farthest first.
    image_size: height and width in pixels.
    rng: source of the textures, colour jitter and sensor noise.
    background: float (H, W, 3) colours in [0, 1]; default: a random textured background.
  """
  y, x = np.mgrid[:image_size, :image_size].astype(np.float64) + 0.5
  image = _background(rng, y, x, image_size) if background is None else background.copy()
  instances = np.zeros((image_size, image_size), np.int32)
  parts = np.zeros_like(instances)
  object_class = np.zeros_like(instances)
  part_class = np.zeros_like(instances)
  part_id = 0
  for object_id, placement in enumerate(placements, start=1):
    for part_name, mask in placement.part_masks(y, x):
      part_id += 1
      colour = _textured(rng, PART_APPEARANCE[part_name], y, x)
      image[mask] = colour[mask]
      instances[mask] = object_id
      parts[mask] = part_id
      object_class[mask] = label_tree.object_class_id(placement.object_class)
      part_class[mask] = label_tree.part_class_id(part_name)

  image += rng.standard_normal(image.shape) * _SENSOR_NOISE
  image = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
  instances = _consecutive(instances)
  parts = _consecutive(parts)
  areas = np.bincount(instances.ravel())
  areas[0] = 0
  largest = int(np.argmax(areas))
  label = int(object_class[instances == largest][0]) if largest else 0
  return Scene(image, instances, parts, object_class, part_class, label)


def render_scene(index: int, *, image_size: int, max_objects: int, seed: int = 0) -> Scene:
  """Renders scene number `index` of the stream `seed` (deterministic).

  Args:
    index: example index, mixed with `seed` into the random stream.
    image_size: height and width in pixels.
    max_objects: the number of objects is uniform in 1..max_objects (before occlusion;
      fully hidden objects and parts do not appear in the maps).
    seed: stream seed; different splits use different seeds.
  """
  if image_size < 8:
    raise ValueError(f"render_scene: image_size must be >= 8 pixels, got {image_size}")
  if max_objects < 1:
    raise ValueError(f"render_scene: max_objects must be >= 1, got {max_objects}")
  rng = np.random.default_rng([seed, index])
  y, x = np.mgrid[:image_size, :image_size].astype(np.float64) + 0.5
  background = _background(rng, y, x, image_size)
  placements = sample_placements(rng, image_size=image_size, max_objects=max_objects)
  scene = paint(placements, image_size=image_size, rng=rng, background=background)
  if scene.label == 0:  # Cannot happen: every template covers its centre, inside the image.
    raise AssertionError(f"render_scene: scene {index} (seed {seed}) has no visible object")
  return scene
