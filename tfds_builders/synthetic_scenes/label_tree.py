"""The fixed two-level label tree of the synthetic scenes.

Every part class belongs to exactly one object class; background is class 0 at
both levels (one region of the object partition and one of the part partition).
Tasks read the tree from here (or from `builder.info.metadata`) to map part
predictions to objects:

  object_class_map = PART_TO_OBJECT[part_class_map]
"""
import numpy as np

OBJECT_CLASSES: tuple[str, ...] = ("background", "figure", "vehicle", "tree", "house")

# Part names are "<object>/<part>" so that the tree can be read off the names too.
PART_CLASSES: tuple[str, ...] = (
    "background",
    "figure/head", "figure/torso", "figure/arm", "figure/leg",
    "vehicle/body", "vehicle/window", "vehicle/wheel",
    "tree/trunk", "tree/crown",
    "house/wall", "house/roof", "house/door",
)

# PART_TO_OBJECT[p] is the object class of part class p.
PART_TO_OBJECT: np.ndarray = np.array(
    [OBJECT_CLASSES.index(name.split("/")[0]) for name in PART_CLASSES], dtype=np.int32)
PART_TO_OBJECT.flags.writeable = False

NUM_OBJECT_CLASSES = len(OBJECT_CLASSES)
NUM_PART_CLASSES = len(PART_CLASSES)


def part_class_id(name: str) -> int:
  """Index of a part class by its "<object>/<part>" name."""
  if name not in PART_CLASSES:
    raise KeyError(f"unknown part class {name!r}; valid names: {', '.join(PART_CLASSES)}")
  return PART_CLASSES.index(name)


def object_class_id(name: str) -> int:
  """Index of an object class by name."""
  if name not in OBJECT_CLASSES:
    raise KeyError(f"unknown object class {name!r}; valid names: {', '.join(OBJECT_CLASSES)}")
  return OBJECT_CLASSES.index(name)
