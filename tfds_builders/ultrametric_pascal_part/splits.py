"""Train / val / test image ids of Ultrametric Pascal-Part.

The paper (sec. 2) uses COB's PASCAL-Context splits: VOC train = the official PASCAL-Context
train list, and the official PASCAL-Context val list divided in two, VOC val and VOC test.
COB's id lists ship with this builder (`cob_splits/`, see its NOTICE.md for the source and
license) and are the default. In lookup order:

1. `train.txt`, `val.txt` and `test.txt` in the manual_dir (see SPLIT_LIST_DIRS): the three
   lists as given (a user's own split).
2. COB's lists (`cob_splits/{train,val,test}.txt`: 4998 / 2607 / 2498 ids covering the 10103
   Pascal-Part images), restricted to the ids present; present ids in none of them are left
   out, and their number is in the recorded rule.
3. When no present id is in COB's lists (another image set), `train.txt` and `val.txt` in the
   manual_dir: train as given, val halved: val = the first ceil(n/2) ids of the *sorted* val
   list, test = the remaining floor(n/2), computed on the whole list before dropping ids
   without annotation, so an image's split never depends on which files a manual_dir holds.
4. Without any list: a deterministic fallback that is NOT the paper's split: sort the ids,
   and the i-th (0-based) goes to train if i % 4 in {0, 1}, val if i % 4 == 2, test if
   i % 4 == 3 (about the paper's 50 / 25 / 25 proportions).

The rule used is stored in the dataset metadata (`split_rule`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib

from tfds_builders import manual_dir as manual_dir_lib

# Where the split lists may be, relative to manual_dir, in lookup order: lists given directly,
# then the ImageSets of the VOC2010 archive (flattened or as extracted).
SPLIT_LIST_DIRS = (".", "ImageSets/Main", "VOCdevkit/VOC2010/ImageSets/Main")
# COB's PASCAL-Context splits (github.com/kmaninis/COB, see cob_splits/NOTICE.md).
COB_SPLITS_DIR = pathlib.Path(__file__).resolve().parent / "cob_splits"
SPLIT_NAMES = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class SplitIds:
  train: tuple[str, ...]
  val: tuple[str, ...]
  test: tuple[str, ...]
  rule: str  # human-readable description, stored in the dataset metadata


def halve_val(val: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """Val / test halves of an official val list whose ids COB's lists lack (module docstring)."""
  ordered = sorted(set(val))
  cut = math.ceil(len(ordered) / 2)
  return tuple(ordered[:cut]), tuple(ordered[cut:])


def fallback_splits(ids: tuple[str, ...] | list[str]) -> SplitIds:
  """Deterministic 50/25/25 split of sorted ids, used only when no split list is given."""
  ordered = sorted(set(ids))
  return SplitIds(
      train=tuple(i for n, i in enumerate(ordered) if n % 4 in (0, 1)),
      val=tuple(i for n, i in enumerate(ordered) if n % 4 == 2),
      test=tuple(i for n, i in enumerate(ordered) if n % 4 == 3),
      rule="fallback (no train.txt/val.txt found): sorted ids, i % 4 in {0,1} -> train, "
           "2 -> val, 3 -> test; NOT the paper's PASCAL-Context split")


def find_split_lists(manual_dir: os.PathLike | str) -> dict[str, pathlib.Path] | None:
  """The first directory of SPLIT_LIST_DIRS holding train.txt and val.txt (and maybe test.txt)."""
  for relative in SPLIT_LIST_DIRS:
    directory = pathlib.Path(manual_dir) / relative
    if (directory / "train.txt").is_file() and (directory / "val.txt").is_file():
      lists = {name: directory / f"{name}.txt" for name in ("train", "val")}
      if (directory / "test.txt").is_file():
        lists["test"] = directory / "test.txt"
      return lists
  return None


def cob_splits(directory: os.PathLike | str = COB_SPLITS_DIR) -> dict[str, tuple[str, ...]]:
  """COB's train / val / test id lists (the paper's splits)."""
  directory = pathlib.Path(directory)
  missing = [name for name in SPLIT_NAMES if not (directory / f"{name}.txt").is_file()]
  if missing:
    raise FileNotFoundError(f"{directory}: COB split lists {missing} are missing; they ship "
                            f"with tfds_builders (reinstall the package)")
  return {name: manual_dir_lib.read_ids(directory / f"{name}.txt") for name in SPLIT_NAMES}


def _check_disjoint(lists: dict[str, tuple[str, ...]], where: str) -> None:
  train, val, test = (set(lists[name]) for name in SPLIT_NAMES)
  overlap = (train & val) | (train & test) | (val & test)
  if overlap:
    raise ValueError(f"split lists in {where} share ids, e.g. {sorted(overlap)[:5]}; "
                     f"expected disjoint train/val/test lists")


def _restrict(lists: dict[str, tuple[str, ...]], available, rule: str) -> SplitIds:
  available = set(available)
  keep = lambda ids: tuple(sorted(i for i in set(ids) if i in available))
  return SplitIds(train=keep(lists["train"]), val=keep(lists["val"]),
                  test=keep(lists["test"]), rule=rule)


def make_splits(manual_dir: os.PathLike | str, available_ids: tuple[str, ...] | list[str], *,
                cob_dir: os.PathLike | str = COB_SPLITS_DIR) -> SplitIds:
  """Split ids restricted to `available_ids` (images with annotation and JPEG); see the
  module docstring for the order in which lists are looked up."""
  user = find_split_lists(manual_dir)
  if user is not None and "test" in user:
    lists = {name: manual_dir_lib.read_ids(user[name]) for name in SPLIT_NAMES}
    _check_disjoint(lists, str(user["train"].parent))
    rule = f"lists as given: {user['train']}, {user['val']}, {user['test']}"
    return _restrict(lists, available_ids, rule)
  cob = cob_splits(cob_dir)
  listed = set().union(*cob.values())
  present = set(available_ids)
  if present & listed:
    _check_disjoint(cob, str(cob_dir))
    rule = ("COB's PASCAL-Context splits, as in the paper (github.com/kmaninis/COB "
            "gt_sets/PASCALContext/voc_{train,val,test}.txt)")
    unlisted = len(present - listed)
    if unlisted:
      rule += f"; {unlisted} present ids in none of them left out"
    return _restrict(cob, available_ids, rule)
  if user is None:
    return fallback_splits(available_ids)
  train = manual_dir_lib.read_ids(user["train"])
  val, test = halve_val(manual_dir_lib.read_ids(user["val"]))
  lists = {"train": train, "val": val, "test": test}
  _check_disjoint(lists, str(user["train"].parent))
  rule = (f"train = {user['train']}; val / test = first ceil(n/2) / last floor(n/2) ids of "
          f"sorted {user['val']} (halves of PASCAL-Context val; the ids are not in COB's lists)")
  return _restrict(lists, available_ids, rule)
