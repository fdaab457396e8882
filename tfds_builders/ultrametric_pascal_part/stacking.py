"""Instance and part label maps from Pascal-Part masks, by stacking (paper, section 2).

Pascal-Part masks overlap: objects were annotated independently (a chair behind a table,
two people hugging) and parts nest (`head` contains `leye`, `nose`, ...). Lapertot, Chierchia
and Perret stack the masks so that the result is a partition:

* instances: every object mask is painted in decreasing order of area, so a smaller object
  is painted last and stays visible where it overlaps a larger one. The paper only says the
  object masks are stacked; we use the same decreasing-area rule as for the parts (the rule the
  paper gives there) because overlaps between objects come from the same nesting effect
  (occluders are usually the smaller, nearer object). Ties keep annotation order.
* parts: within each instance's *visible* pixels, its part masks are painted in decreasing
  order of area (ties: annotation order), so no smaller part (an eye) is covered by a larger one
  (the head). Visible pixels that no part covers become one more part, the object's
  "remainder" (e.g. a tv-monitor's frame around its `screen`, a car's body between its
  annotated lights, doors and wheels). An object without part annotation is one part.

Ids: instance k (1-based) is the k-th object of the annotation; part ids are numbered
1..P instance by instance, parts in annotation order then the remainder; 0 is background in
both maps. Every part lies inside exactly one instance, so the part map refines the instance map.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tfds_builders.ultrametric_pascal_part import pascal_part_mat

REMAINDER_PART_NAME = "remainder"


@dataclasses.dataclass(frozen=True)
class StackedAnnotation:
  instances: np.ndarray  # int32 HxW, 0 = background, k = k-th annotated object
  parts: np.ndarray  # int32 HxW, 0 = background, p in 1..P
  instance_classes: np.ndarray  # int32 (N+1,), VOC class index of instance k; [0] = 0
  part_instances: np.ndarray  # int32 (P+1,), instance of part p; [0] = 0
  part_names: tuple[str, ...]  # (P+1,), name of part p; [0] = "background"


def _paint_by_decreasing_area(masks: list[np.ndarray], labels: list[int],
                              canvas: np.ndarray, where: np.ndarray | None = None) -> None:
  """Paints `labels[i]` on `masks[i]` (restricted to `where`), larger masks first."""
  areas = [int(m.sum()) for m in masks]
  # Stable sort on -area: ties keep the given (annotation) order.
  for i in sorted(range(len(masks)), key=lambda i: -areas[i]):
    mask = masks[i] if where is None else masks[i] & where
    canvas[mask] = labels[i]


def stack_instances(objects: tuple[pascal_part_mat.AnnotatedObject, ...],
                    shape: tuple[int, int]) -> np.ndarray:
  """Instance map: object k (1-based) painted over larger objects, 0 = background."""
  instances = np.zeros(shape, np.int32)
  _paint_by_decreasing_area([o.mask for o in objects], list(range(1, len(objects) + 1)),
                            instances)
  return instances


def stack(annotation: pascal_part_mat.PascalPartAnnotation,
          shape: tuple[int, int]) -> StackedAnnotation:
  """Stacks the object and part masks of one annotation into nested label maps."""
  objects = annotation.objects
  for obj in objects:
    if obj.mask.shape != tuple(shape):
      raise ValueError(f"{annotation.image_id}: object mask shape {obj.mask.shape} differs from "
                       f"the image shape {tuple(shape)}")
  instances = stack_instances(objects, shape)
  parts = np.zeros(shape, np.int32)
  part_instances = [0]
  part_names = ["background"]
  for k, obj in enumerate(objects, start=1):
    visible = instances == k
    labels = list(range(len(part_names), len(part_names) + len(obj.parts)))
    _paint_by_decreasing_area([p.mask for p in obj.parts], labels, parts, where=visible)
    part_instances += [k] * len(obj.parts)
    part_names += [p.name for p in obj.parts]
    remainder = visible & (parts == 0)
    if remainder.any() or not obj.parts:
      parts[remainder] = len(part_names)
      part_instances.append(k)
      part_names.append(REMAINDER_PART_NAME if obj.parts else obj.class_name)
  instance_classes = np.array([0] + [o.class_index for o in objects], np.int32)
  return StackedAnnotation(instances=instances, parts=parts, instance_classes=instance_classes,
                           part_instances=np.array(part_instances, np.int32),
                           part_names=tuple(part_names))
