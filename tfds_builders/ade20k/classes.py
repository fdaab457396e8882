"""ADE20K SceneParsing classes: 150 classes; annotation value k is class k - 1, 0 ignored.

The table is data (`ade20k_classes.json`, sources cited inside). HiPoSeg's 150 -> 14
mid-level hierarchy (from LogicSeg) is NOT shipped: LogicSeg's public code defines it as
index ranges over an unpublished reordering of the classes (`mid_level_note` in the JSON
says exactly what was found). `label_tree()` therefore raises, naming the way to supply a
table (`config.model.label_tree_file`).

  ANNOTATION_TO_CLASS[annotation]  -> class 0..149, 255 for 0 ("other objects")
"""
from __future__ import annotations

import json
import pathlib

from tfds_builders import semantic_release

TABLE_PATH = pathlib.Path(__file__).with_name("ade20k_classes.json")
TABLE = json.loads(TABLE_PATH.read_text())
IGNORE_LABEL: int = TABLE["ignore_label"]
CLASSES: tuple[str, ...] = tuple(TABLE["classes"])
NUM_CLASSES = len(CLASSES)  # 150
ANNOTATION_TO_CLASS = semantic_release.lookup_table(
    {0: IGNORE_LABEL, **{k + 1: k for k in range(NUM_CLASSES)}})


def label_tree():
  """Raises: the 150 -> 14 table is not available (see the module docstring)."""
  raise ValueError(f"ade20k: no 150 -> 14 label tree is shipped ({TABLE_PATH}, "
                   f"mid_level_note: {TABLE['mid_level_note']})")
