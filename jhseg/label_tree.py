"""Label trees: named class hierarchies shared by datasets, losses and metrics.

A `LabelTree` has L levels, finest first (level 0, e.g. parts), each with its class
names, and for every level below the top the parent of each class one level up:

  parents[l][c] = the level-(l+1) class of level-l class c.

Level 0 is the label space of the annotations (HiPoSeg's Y^L, section 3.1); the
coarser levels follow by composing parents (HiPoSeg eq. 2, y' = pi(y)). One `ignore_label`
(255 by default, the PASCAL / Cityscapes convention) marks unlabelled pixels at every
level and is carried through every mapping.

Uses:
  * data: `check_labels` / `check_consistent` validate label maps on the host with
    errors naming the source, the level and the offending values;
  * losses: `fine_to_level(1)` is pi as an int table; `map_labels` applies it under jit
    (ignore stays ignore); `children` lists Y^L(i) of eq. 4;
  * metrics: `to_metrics_tree()` gives the `jhseg.metrics.semantic.LabelTree` that
    scores mIoU at every level from one leaf confusion matrix;
  * metadata: `to_metadata` / `from_metadata` round-trip through JSON (TFDS
    `builder.info.metadata`).

Every class of a coarser level must have at least one child: a class nobody maps to
would have no pixels and no low-level prototypes (eq. 4), which is always a typo in a
hand-written table.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

DEFAULT_IGNORE_LABEL = 255
_MAX_LISTED = 10


def _listed(values) -> str:
  values = list(values)
  shown = ", ".join(str(v) for v in values[:_MAX_LISTED])
  return shown + (f", ... ({len(values)} in all)" if len(values) > _MAX_LISTED else "")


def _frozen_int_array(values, *, where: str) -> np.ndarray:
  array = np.asarray(values)
  if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
    raise ValueError(f"LabelTree: {where} should be a 1-D sequence of integer class ids, "
                     f"got {array.dtype} array of shape {array.shape}")
  array = array.astype(np.int32)
  array.flags.writeable = False
  return array


@dataclasses.dataclass(frozen=True, eq=False)
class LabelTree:
  """Class names per level (finest first), parents between levels, one ignore label.

  Build it with the constructor (names and parents as sequences; arrays are copied and
  frozen) or with `two_level` for the common part -> object case.
  """
  level_names: tuple[str, ...]
  class_names: tuple[tuple[str, ...], ...]
  parents: tuple[np.ndarray, ...]
  ignore_label: int = DEFAULT_IGNORE_LABEL

  def __post_init__(self):
    level_names = tuple(str(name) for name in self.level_names)
    class_names = tuple(tuple(str(n) for n in names) for names in self.class_names)
    if len(level_names) < 2:
      raise ValueError(f"LabelTree: needs at least two levels, got level_names="
                       f"{level_names}")
    if len(set(level_names)) != len(level_names):
      raise ValueError(f"LabelTree: level_names {level_names} are not unique")
    if len(class_names) != len(level_names):
      raise ValueError(f"LabelTree: class_names has {len(class_names)} levels but "
                       f"level_names {level_names} has {len(level_names)}")
    if len(self.parents) != len(level_names) - 1:
      raise ValueError(f"LabelTree: parents needs one table per level below the top "
                       f"({len(level_names) - 1}), got {len(self.parents)}")
    for level, names in enumerate(class_names):
      if not names:
        raise ValueError(f"LabelTree: level {level} ({level_names[level]!r}) has no classes")
      duplicates = sorted({n for n in names if names.count(n) > 1})
      if duplicates:
        raise ValueError(f"LabelTree: level {level} ({level_names[level]!r}) repeats the "
                         f"class names {duplicates}")
    parents = []
    for level, table in enumerate(self.parents):
      where = f"parents[{level}] ({level_names[level]} -> {level_names[level + 1]})"
      table = _frozen_int_array(table, where=where)
      fine, coarse = len(class_names[level]), len(class_names[level + 1])
      if len(table) != fine:
        raise ValueError(f"LabelTree: {where} has {len(table)} entries, expected one per "
                         f"{level_names[level]} class ({fine})")
      bad = np.flatnonzero((table < 0) | (table >= coarse))
      if bad.size:
        raise ValueError(
            f"LabelTree: {where} maps classes "
            f"{_listed(class_names[level][i] for i in bad)} to "
            f"{_listed(table[bad])}, outside the {coarse} {level_names[level + 1]} "
            f"classes 0..{coarse - 1}")
      childless = sorted(set(range(coarse)) - set(table.tolist()))
      if childless:
        raise ValueError(
            f"LabelTree: {where}: {level_names[level + 1]} classes "
            f"{_listed(class_names[level + 1][i] for i in childless)} have no "
            f"{level_names[level]} class")
      parents.append(table)
    ignore = int(self.ignore_label)
    largest = max(len(names) for names in class_names)
    if 0 <= ignore < largest:
      raise ValueError(f"LabelTree: ignore_label={ignore} collides with a class id; it "
                       f"must be negative or >= {largest}")
    object.__setattr__(self, "level_names", level_names)
    object.__setattr__(self, "class_names", class_names)
    object.__setattr__(self, "parents", tuple(parents))
    object.__setattr__(self, "ignore_label", ignore)

  @classmethod
  def two_level(cls, fine_names: Sequence[str], coarse_names: Sequence[str],
                parent: Sequence[int], *, level_names: Sequence[str] = ("part", "object"),
                ignore_label: int = DEFAULT_IGNORE_LABEL) -> "LabelTree":
    """A two-level tree: `parent[c]` is the coarse class of fine class c (HiPoSeg's pi)."""
    return cls(tuple(level_names), (tuple(fine_names), tuple(coarse_names)), (parent,),
               ignore_label)

  # -- structure ------------------------------------------------------------------

  @property
  def num_levels(self) -> int:
    return len(self.level_names)

  def level_index(self, level: int | str) -> int:
    """Index of a level given by index or by name; errors list the valid levels."""
    if isinstance(level, str):
      if level not in self.level_names:
        raise ValueError(f"LabelTree: unknown level {level!r}; valid levels: "
                         f"{list(self.level_names)}")
      return self.level_names.index(level)
    if not 0 <= int(level) < self.num_levels:
      raise ValueError(f"LabelTree: level {level} out of range; the tree has levels "
                       f"0..{self.num_levels - 1} {list(self.level_names)}")
    return int(level)

  def num_classes(self, level: int | str = 0) -> int:
    return len(self.class_names[self.level_index(level)])

  def class_id(self, name: str, level: int | str = 0) -> int:
    """Id of the class `name` at `level`; the error lists that level's names."""
    names = self.class_names[self.level_index(level)]
    if name not in names:
      raise KeyError(f"LabelTree: unknown {self.level_names[self.level_index(level)]} "
                     f"class {name!r}; valid names: {', '.join(names)}")
    return names.index(name)

  def fine_to_level(self, level: int | str) -> np.ndarray:
    """int32 table (num_classes(0),): the level-`level` class of every finest class."""
    level = self.level_index(level)
    table = np.arange(self.num_classes(0), dtype=np.int32)
    for parent in self.parents[:level]:
      table = parent[table]
    table.flags.writeable = False
    return table

  def children(self, coarse_class: int, level: int | str = 1) -> np.ndarray:
    """Classes one level below `level` whose parent is `coarse_class` (eq. 4's Y^L(i))."""
    level = self.level_index(level)
    if level == 0:
      raise ValueError("LabelTree.children: level 0 is the finest level; it has no "
                       "children")
    if not 0 <= coarse_class < self.num_classes(level):
      raise ValueError(f"LabelTree.children: class {coarse_class} is outside the "
                       f"{self.num_classes(level)} {self.level_names[level]} classes")
    return np.flatnonzero(self.parents[level - 1] == coarse_class).astype(np.int32)

  # -- label maps -----------------------------------------------------------------

  def map_labels(self, labels, level: int | str):
    """Finest-level label map -> level-`level` labels; NumPy or JAX (jit-able).

    Ignore pixels stay `ignore_label`; so do out-of-range ids (under jit nothing can be
    raised: validate data on the host with `check_labels`).
    """
    table = self.fine_to_level(level)
    xp = jnp if not isinstance(labels, np.ndarray) else np
    labels = xp.asarray(labels)
    valid = (labels >= 0) & (labels < len(table))
    mapped = xp.asarray(table)[xp.where(valid, labels, 0)]
    return xp.where(valid, mapped, self.ignore_label).astype(labels.dtype)

  def check_labels(self, labels: np.ndarray, level: int | str = 0, *,
                   source: str = "labels") -> None:
    """Raises ValueError naming `source` if a value is neither a class id nor ignore."""
    level = self.level_index(level)
    values = np.unique(np.asarray(labels))
    allowed = (values >= 0) & (values < self.num_classes(level))
    bad = values[~allowed & (values != self.ignore_label)]
    if bad.size:
      raise ValueError(
          f"{source}: {self.level_names[level]} labels should be class ids "
          f"0..{self.num_classes(level) - 1} or the ignore label {self.ignore_label}, "
          f"found {_listed(bad.tolist())}")

  def check_consistent(self, fine_labels: np.ndarray, coarse_labels: np.ndarray, *,
                       level: int | str = 1, source: str = "labels") -> None:
    """Raises ValueError unless `coarse_labels == map_labels(fine_labels, level)`.

    Where the fine label is ignore the coarse label may be anything valid (a pixel can
    be known to be a `person` without a part annotation).
    """
    level = self.level_index(level)
    fine_labels, coarse_labels = np.asarray(fine_labels), np.asarray(coarse_labels)
    if fine_labels.shape != coarse_labels.shape:
      raise ValueError(f"{source}: {self.level_names[0]} labels of shape "
                       f"{fine_labels.shape} and {self.level_names[level]} labels of "
                       f"shape {coarse_labels.shape} differ")
    self.check_labels(fine_labels, 0, source=source)
    self.check_labels(coarse_labels, level, source=source)
    known = fine_labels != self.ignore_label
    expected = self.map_labels(fine_labels, level)
    wrong = known & (expected != coarse_labels)
    if wrong.any():
      pairs = sorted({(int(f), int(c)) for f, c in zip(fine_labels[wrong],
                                                        coarse_labels[wrong])})
      described = [f"{self.class_names[0][f]} under {self._name(level, c)}"
                   for f, c in pairs]
      raise ValueError(f"{source}: {int(wrong.sum())} pixels have a "
                       f"{self.level_names[level]} label that is not the parent of their "
                       f"{self.level_names[0]} label: {_listed(described)}")

  def _name(self, level: int, class_id: int) -> str:
    if class_id == self.ignore_label:
      return "ignore"
    return self.class_names[level][class_id]

  # -- conversions ----------------------------------------------------------------

  def to_metrics_tree(self):
    """The `jhseg.metrics.semantic.LabelTree` for per-level mIoU (same level order)."""
    from jhseg.metrics import semantic  # pylint: disable=import-outside-toplevel
    return semantic.LabelTree(tuple(self.fine_to_level(l).astype(np.int64)
                                    for l in range(self.num_levels)))

  def to_metadata(self) -> dict[str, Any]:
    """JSON-serialisable description (lists and ints only)."""
    return {"level_names": list(self.level_names),
            "class_names": [list(names) for names in self.class_names],
            "parents": [table.tolist() for table in self.parents],
            "ignore_label": self.ignore_label}

  @classmethod
  def from_metadata(cls, metadata: Mapping[str, Any], *,
                    source: str = "metadata") -> "LabelTree":
    """Inverse of `to_metadata`; a missing key raises an error naming `source`."""
    keys = ("level_names", "class_names", "parents", "ignore_label")
    missing = [k for k in keys if k not in metadata]
    if missing:
      raise ValueError(f"{source}: a label tree needs the keys {list(keys)}; missing "
                       f"{missing}")
    return cls(tuple(metadata["level_names"]),
               tuple(tuple(n) for n in metadata["class_names"]),
               tuple(metadata["parents"]), int(metadata["ignore_label"]))

  def __eq__(self, other) -> bool:
    if not isinstance(other, LabelTree):
      return NotImplemented
    return (self.level_names == other.level_names
            and self.class_names == other.class_names
            and self.ignore_label == other.ignore_label
            and all(np.array_equal(a, b) for a, b in zip(self.parents, other.parents)))

  __hash__ = None


def synthetic_scenes_tree(*, ignore_label: int = DEFAULT_IGNORE_LABEL) -> LabelTree:
  """The synthetic scenes' part -> object tree (`tfds_builders.synthetic_scenes.label_tree`)."""
  # Imported here: jhseg does not depend on the builders at import time.
  from tfds_builders.synthetic_scenes import label_tree  # pylint: disable=import-outside-toplevel
  return LabelTree.two_level(label_tree.PART_CLASSES, label_tree.OBJECT_CLASSES,
                             label_tree.PART_TO_OBJECT, ignore_label=ignore_label)
