"""Train / val / test image ids of Ultrametric Pascal-Part.

The paper trains on PASCAL-Context train and splits PASCAL-Context val in two halves for
validation and test. PASCAL-Context uses the train / val lists of PASCAL VOC 2010
(`VOC2010/ImageSets/Main/{train,val}.txt`, 4998 / 5105 images). The paper does not say how
val is halved; our rule, chosen to be reproducible from the official lists alone:

  val  = the first ceil(n/2) ids of the *sorted* official val list,
  test = the remaining floor(n/2) ids,

computed on the whole list before dropping ids without annotation, so an image's split never
depends on which files a manual_dir happens to hold. A `test.txt` next to the lists replaces
the halving (the three lists are then used as given).

Without any list (e.g. the 18-image sample), a deterministic fallback that is NOT the paper's
split: sort the ids, and the i-th (0-based) goes to train if i % 4 in {0, 1}, val if
i % 4 == 2, test if i % 4 == 3 (about the paper's 50 / 25 / 25 proportions).
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib

# Where the split lists may be, relative to manual_dir, in lookup order: lists given directly,
# then the ImageSets of the VOC2010 archive (flattened or as extracted).
SPLIT_LIST_DIRS = (".", "ImageSets/Main", "VOCdevkit/VOC2010/ImageSets/Main")


@dataclasses.dataclass(frozen=True)
class SplitIds:
  train: tuple[str, ...]
  val: tuple[str, ...]
  test: tuple[str, ...]
  rule: str  # human-readable description, stored in the dataset metadata


def read_id_list(path: os.PathLike | str) -> tuple[str, ...]:
  """Ids of a VOC-style list: one id per line, first whitespace-separated token."""
  ids = []
  for number, line in enumerate(pathlib.Path(path).read_text().splitlines(), start=1):
    tokens = line.split()
    if not tokens:
      continue
    if len(tokens[0]) > 64 or "/" in tokens[0]:
      raise ValueError(f"{os.fspath(path)}: line {number}: expected an image id such as "
                       f"'2008_000652', got {line!r}")
    ids.append(tokens[0])
  return tuple(ids)


def halve_val(val: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """The paper's val / test halves of an official val list (see module docstring)."""
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


def make_splits(manual_dir: os.PathLike | str, available_ids: tuple[str, ...] | list[str]) -> SplitIds:
  """Split ids restricted to `available_ids` (images with annotation and JPEG)."""
  lists = find_split_lists(manual_dir)
  if lists is None:
    return fallback_splits(available_ids)
  train = read_id_list(lists["train"])
  val = read_id_list(lists["val"])
  if "test" in lists:
    test = read_id_list(lists["test"])
    rule = f"lists as given: {lists['train']}, {lists['val']}, {lists['test']}"
  else:
    val, test = halve_val(val)
    rule = (f"train = {lists['train']}; val / test = first ceil(n/2) / last floor(n/2) ids of "
            f"sorted {lists['val']} (halves of PASCAL-Context val, as in the paper)")
  available = set(available_ids)
  keep = lambda ids: tuple(sorted(i for i in set(ids) if i in available))
  overlap = (set(train) & set(val)) | (set(train) & set(test)) | (set(val) & set(test))
  if overlap:
    raise ValueError(f"split lists in {lists['train'].parent} share ids, e.g. "
                     f"{sorted(overlap)[:5]}; expected disjoint train/val/test lists")
  return SplitIds(train=keep(train), val=keep(val), test=keep(test), rule=rule)
