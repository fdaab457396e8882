"""The PASCAL-Part-108 label tree: 108 part classes under 21 object classes.

The table is data (`pascal_part_108_classes.json`, sources cited inside): the 108 class
names in the order of GMNet (Michieli et al., ECCV 2020; LTTM/GMNet `general_utils.py`),
their objects, and how the names of the Pascal-Part release (`Annotations_Part`, Chen et
al., CVPR 2014) merge into them. Left/right, front/back, upper/lower and numbered
instances of a part are one class (e.g. `lfleg`, `rbleg` -> `cat/leg`; `wheel_3` ->
`car/wheel`); a few tiny parts (eyes of bird, cow, horse, sheep; person eyebrows;
aeroplane tail; bicycle headlights; car mirrors) are `ignored_parts` and become the
ignore label 255. Boat, chair, dining table and sofa have no parts: their silhouette is
one class. Numbered instances are written `<name>_#` in the table.

  part_class_id("cat", "rfpa")   -> id of "cat/paw"
  PART_TO_OBJECT[part_ids]       -> object ids
  label_tree()                   -> `jhseg.label_tree.LabelTree` (parts -> objects)
"""
from __future__ import annotations

import json
import pathlib
import re

import numpy as np

TABLE_PATH = pathlib.Path(__file__).with_name("pascal_part_108_classes.json")
IGNORE_LABEL = 255
# The Pascal-Part release spells the dining table `table` (class_ind 11).
RELEASE_SPELLINGS = {"table": "diningtable"}
_NUMBERED = re.compile(r"^(.*)_(\d+)$")


def _load(path: pathlib.Path) -> dict:
  table = json.loads(path.read_text())
  keys = ("object_classes", "part_classes", "part_to_object", "part_merges",
          "ignored_parts", "silhouette_objects", "numbered_suffix", "ignore_label")
  missing = [k for k in keys if k not in table]
  if missing:
    raise ValueError(f"{path}: missing fields {missing}")
  return table


TABLE = _load(TABLE_PATH)
OBJECT_CLASSES: tuple[str, ...] = tuple(TABLE["object_classes"])
PART_CLASSES: tuple[str, ...] = tuple(TABLE["part_classes"])
PART_TO_OBJECT: np.ndarray = np.asarray(TABLE["part_to_object"], np.int32)
PART_TO_OBJECT.flags.writeable = False
SILHOUETTE_OBJECTS: tuple[str, ...] = tuple(TABLE["silhouette_objects"])
NUM_OBJECT_CLASSES = len(OBJECT_CLASSES)   # 21
NUM_PART_CLASSES = len(PART_CLASSES)       # 108


def _raw_name_table() -> dict[str, dict[str, int]]:
  """object -> {release part name (numbered as `<name>_#`) -> part id or IGNORE_LABEL}."""
  result: dict[str, dict[str, int]] = {}
  for obj, merges in TABLE["part_merges"].items():
    names = result.setdefault(obj, {})
    for merged, raw_names in merges.items():
      part_id = PART_CLASSES.index(f"{obj}/{merged}")
      for raw in raw_names:
        names[raw] = part_id
  for obj, raw_names in TABLE["ignored_parts"].items():
    for raw in raw_names:
      result.setdefault(obj, {})[raw] = IGNORE_LABEL
  return result


RAW_PART_NAMES = _raw_name_table()


def object_class_id(name: str) -> int:
  """Id (0..20) of a VOC object class; accepts the release's spelling `table`."""
  name = RELEASE_SPELLINGS.get(name, name)
  if name not in OBJECT_CLASSES:
    raise KeyError(f"unknown PASCAL-Part-108 object class {name!r}; valid names: "
                   f"{', '.join(OBJECT_CLASSES)}")
  return OBJECT_CLASSES.index(name)


def silhouette_class_id(object_name: str) -> int | None:
  """The part class of a part-less object (boat, chair, diningtable, sofa), else None."""
  name = RELEASE_SPELLINGS.get(object_name, object_name)
  return PART_CLASSES.index(name) if name in SILHOUETTE_OBJECTS else None


def part_class_id(object_name: str, part_name: str) -> int:
  """Class (0..107) of a release part name of an object, or IGNORE_LABEL for ignored parts.

  Raises KeyError naming the object and listing its valid part names otherwise.
  """
  obj = RELEASE_SPELLINGS.get(object_name, object_name)
  names = RAW_PART_NAMES.get(obj, {})
  if part_name in names:
    return names[part_name]
  numbered = _NUMBERED.match(part_name)
  key = numbered.group(1) + TABLE["numbered_suffix"] if numbered else None
  if key in names:
    return names[key]
  raise KeyError(f"unknown part {part_name!r} of a {obj!r} object; valid part names: "
                 f"{', '.join(sorted(names)) or '(none: the object has no parts)'}")


def label_tree():
  """The tree as a `jhseg.label_tree.LabelTree` (levels "part" and "object")."""
  from jhseg.label_tree import LabelTree  # pylint: disable=import-outside-toplevel
  return LabelTree.two_level(PART_CLASSES, OBJECT_CLASSES, PART_TO_OBJECT,
                             ignore_label=IGNORE_LABEL)
