"""Object and part class maps of one Pascal-Part annotation (PASCAL-Part-108 classes).

Objects are painted in the order of the annotation file, later ones over earlier ones
(as the release's own `anno2mask` demo). For each object:
  object map: its VOC class (1..20) on its mask;
  part map:   its silhouette class on its mask for boat / chair / diningtable / sofa;
              otherwise the ignore label (the object is known, its part is not) and then
              every annotated part's class (ignore for `ignored_parts`) on the part's mask;
              a part pixel also sets the object map, so part and object always agree.
Background is 0 in both maps.
"""
from __future__ import annotations

import os

import numpy as np

from tfds_builders.pascal_part_108 import classes
from tfds_builders.ultrametric_pascal_part import pascal_part_mat


class UnknownPartError(ValueError):
  """An annotation names a part that the PASCAL-Part-108 table does not know."""


def class_maps(annotation: pascal_part_mat.PascalPartAnnotation, shape: tuple[int, int], *,
               source: os.PathLike | str = "annotation") -> tuple[np.ndarray, np.ndarray]:
  """(object_class, part_class) uint8 maps of shape `shape`; `source` names the file."""
  object_class = np.zeros(shape, np.uint8)
  part_class = np.zeros(shape, np.uint8)
  for index, obj in enumerate(annotation.objects, start=1):
    where = f"{os.fspath(source)}: anno.objects({index})"
    object_id = classes.object_class_id(obj.class_name)
    object_class[obj.mask] = object_id
    silhouette = classes.silhouette_class_id(obj.class_name)
    part_class[obj.mask] = classes.IGNORE_LABEL if silhouette is None else silhouette
    for part_index, part in enumerate(obj.parts, start=1):
      try:
        part_id = classes.part_class_id(obj.class_name, part.name)
      except KeyError as error:
        raise UnknownPartError(f"{where}.parts({part_index}).part_name: "
                               f"{error.args[0]}") from None
      part_class[part.mask] = part_id
      object_class[part.mask] = object_id
  return object_class, part_class
