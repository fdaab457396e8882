"""The Mapillary Vistas v2.0 label tree: 124 classes -> 17 mid-level -> 7 top-level groups.

The table is data (`mapillary_vistas_classes.json`, sources cited inside): the class list
of config_v2.0.json's order and LogicSeg's hierarchy, given there as contiguous ranges
[start, end) of class indices per group; a class outside every range ('Unlabeled', 123)
belongs to the `unassigned_group` (void), as LogicSeg's `prepare_targets` does. HiPoSeg
(section 4.1) counts 16 mid-level and 4 top-level classes; the published table has 17 and
7 and is used unchanged (the JSON's `sources` say more).

HiPoSeg trains on two levels, the fine classes and the mid level (section 4.1, "we use the
mid-level as the higher-level concept"); the tree has all three levels, so evaluation also
reports the top level.

  label_tree()   -> `jhseg.label_tree.LabelTree` (levels "class", "mid", "top")
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

TABLE_PATH = pathlib.Path(__file__).with_name("mapillary_vistas_classes.json")
TABLE = json.loads(TABLE_PATH.read_text())
IGNORE_LABEL: int = TABLE["ignore_label"]
CLASSES: tuple[str, ...] = tuple(TABLE["classes"])
NUM_CLASSES = len(CLASSES)  # 124
MID_LEVEL: tuple[str, ...] = tuple(TABLE["mid_level"])
TOP_LEVEL: tuple[str, ...] = tuple(TABLE["top_level"])


def groups_of(ranges: dict[str, list[int]], *, unassigned: str, where: str) -> np.ndarray:
  """int32 (NUM_CLASSES,): the index (in `ranges` order) of the group of every class."""
  names = list(ranges)
  group = np.full(NUM_CLASSES, names.index(unassigned), np.int32)
  seen = np.zeros(NUM_CLASSES, bool)
  for index, (name, (start, end)) in enumerate(ranges.items()):
    if not 0 <= start < end <= NUM_CLASSES or seen[start:end].any():
      raise ValueError(f"{TABLE_PATH}: {where} range {name} = [{start}, {end}) is outside "
                       f"0..{NUM_CLASSES} or overlaps another")
    seen[start:end] = True
    group[start:end] = index
  return group


CLASS_TO_MID = groups_of(TABLE["mid_level"], unassigned=TABLE["unassigned_group"],
                         where="mid_level")
CLASS_TO_TOP = groups_of(TABLE["top_level"], unassigned=TABLE["unassigned_group"],
                         where="top_level")


def _mid_to_top() -> np.ndarray:
  """Each mid-level group's top group; fails if a mid group straddles two top groups."""
  table = np.zeros(len(MID_LEVEL), np.int32)
  for mid in range(len(MID_LEVEL)):
    tops = np.unique(CLASS_TO_TOP[CLASS_TO_MID == mid])
    if len(tops) != 1:
      raise ValueError(f"{TABLE_PATH}: mid-level group {MID_LEVEL[mid]} spans the top-level "
                       f"groups {[TOP_LEVEL[t] for t in tops]}; the levels must nest")
    table[mid] = tops[0]
  return table


MID_TO_TOP = _mid_to_top()
# The PNG index is the class id: every index 0..123 is a class, nothing is ignored.
LABEL_INDICES = dict(zip(range(NUM_CLASSES), range(NUM_CLASSES)))


def label_tree():
  """The tree as a `jhseg.label_tree.LabelTree` (levels "class", "mid", "top")."""
  from jhseg.label_tree import LabelTree  # pylint: disable=import-outside-toplevel
  return LabelTree(("class", "mid", "top"), (CLASSES, MID_LEVEL, TOP_LEVEL),
                   (CLASS_TO_MID, MID_TO_TOP), IGNORE_LABEL)
