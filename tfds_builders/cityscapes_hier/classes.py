"""The Cityscapes label tree: 19 evaluated classes (train ids) under 7 categories.

The table is data (`cityscapes_classes.json`, source cited inside): the official label
table of cityscapesScripts (`helpers/labels.py`) with, for every annotation label id,
its train id (0..18, or 255 for the labels not evaluated) and its category. The coarse
level is the category of each train class, in the table's category-id order:
flat, construction, object, nature, sky, human, vehicle (the `void` category has no
evaluated class).

The release's `*_gtFine_labelIds.png` (and TFDS `cityscapes`' `segmentation_label`,
which stores the same PNGs) hold label ids, not train ids:

  LABEL_ID_TO_TRAIN_ID[label_ids]     -> train ids 0..18, 255 = ignore
  TRAIN_ID_TO_CATEGORY[train_ids]     -> category ids 0..6
  train_ids(label_ids)                -> the same, checking every id is in the table
  label_tree()                        -> `jhseg.label_tree.LabelTree` (class -> category)
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

from tfds_builders import semantic_release

TABLE_PATH = pathlib.Path(__file__).with_name("cityscapes_classes.json")


def _load(path: pathlib.Path) -> dict:
  table = json.loads(path.read_text())
  missing = [k for k in ("labels", "categories", "ignore_label") if k not in table]
  if missing:
    raise ValueError(f"{path}: missing fields {missing}")
  for row in table["labels"]:
    absent = [k for k in ("name", "id", "train_id", "category") if k not in row]
    if absent:
      raise ValueError(f"{path}: label {row} lacks the fields {absent}")
  return table


TABLE = _load(TABLE_PATH)
IGNORE_LABEL: int = TABLE["ignore_label"]
CATEGORIES: tuple[str, ...] = tuple(TABLE["categories"])
# Rows of the evaluated classes, by train id (the license plate has id -1: not in the PNGs).
_TRAIN_ROWS = sorted((r for r in TABLE["labels"] if 0 <= r["train_id"] < IGNORE_LABEL),
                     key=lambda r: r["train_id"])
CLASSES: tuple[str, ...] = tuple(r["name"] for r in _TRAIN_ROWS)
TRAIN_ID_TO_CATEGORY = np.asarray([CATEGORIES.index(r["category"]) for r in _TRAIN_ROWS],
                                  np.int32)
TRAIN_ID_TO_CATEGORY.flags.writeable = False
LABEL_ID_TO_TRAIN_ID = semantic_release.lookup_table(
    {r["id"]: r["train_id"] for r in TABLE["labels"] if r["id"] >= 0})


def train_ids(label_ids: np.ndarray, *, source: str = "labels") -> np.ndarray:
  """uint8 train ids (255 = ignore) of a label-id map; an unknown id fails naming `source`."""
  return semantic_release.map_label_ids(label_ids, LABEL_ID_TO_TRAIN_ID, source=source)


def label_tree():
  """The tree as a `jhseg.label_tree.LabelTree` (levels "class" and "category")."""
  from jhseg.label_tree import LabelTree  # pylint: disable=import-outside-toplevel
  return LabelTree.two_level(CLASSES, CATEGORIES, TRAIN_ID_TO_CATEGORY,
                             level_names=("class", "category"), ignore_label=IGNORE_LABEL)
