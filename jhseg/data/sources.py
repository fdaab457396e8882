"""Random-access data sources: TFDS datasets prepared in array_record format.

Datasets of this repository (`tfds_builders/`) are registered on demand.
Those that need no download (the synthetic scenes) are built automatically
the first time a run asks for them, so every default run works offline.
A record that fails to decode (e.g. a truncated JPEG stored by an older build) raises
`RecordDecodeError` naming the dataset, the split and the record index.

A split may be a union of the dataset's splits written "a+b" (e.g. BSDS500's "train+val",
on which DEL and the BSDS methods train): the records of a, then those of b.
"""
from __future__ import annotations

import contextlib
import importlib
import io
from typing import Any, Sequence

import ml_collections
import numpy as np
from absl import logging

# Builders that live in this repository: dataset name -> module that registers it.
LOCAL_BUILDERS = {
    "synthetic_scenes": "tfds_builders.synthetic_scenes",
    "bsds500": "tfds_builders.bsds500",
    "ultrametric_pascal_part": "tfds_builders.ultrametric_pascal_part",
    "voc2012_sbd": "tfds_builders.voc2012_sbd",
    "pascal_part_108": "tfds_builders.pascal_part_108",
    "pascal_context": "tfds_builders.pascal_context",
    "cityscapes_hier": "tfds_builders.cityscapes_hier",
    "mapillary_vistas": "tfds_builders.mapillary_vistas",
    "ade20k": "tfds_builders.ade20k",
    "partimagenet": "tfds_builders.partimagenet",
    "imagenet100": "tfds_builders.imagenet100",
}
# Local builders that generate their data: each module's `ensure_built(config, data_dir)`
# builds it on first use.
SELF_BUILDING = ("synthetic_scenes",)


class DatasetNotFoundError(FileNotFoundError):
  pass


class RecordDecodeError(ValueError):
  """A stored record cannot be decoded; the message names dataset, split and record."""


class NamedRecords(Sequence):
  """A random-access source whose decoding errors name the dataset, split and record.

  Without it, a corrupt record fails deep inside grain with e.g. `OSError: image file is
  truncated`, naming neither the dataset nor the record.
  """

  def __init__(self, source: Sequence[dict[str, Any]], *, dataset: str, split: str):
    self._source, self.dataset, self.split = source, dataset, split

  def __len__(self) -> int:
    return len(self._source)

  def _error(self, index, error: Exception) -> RecordDecodeError:
    return RecordDecodeError(f"dataset {self.dataset!r} split {self.split!r} record {index}: "
                             f"cannot decode it ({type(error).__name__}: {error}); rebuild the "
                             f"dataset (its builder validates every file)")

  def __getitem__(self, index):
    if isinstance(index, (int, np.integer)) and not -len(self) <= index < len(self):
      raise IndexError(f"dataset {self.dataset!r} split {self.split!r}: record {index} out of "
                       f"range [0, {len(self)})")
    if isinstance(index, (int, np.integer)):
      index = int(index) % len(self)  # array_record takes no negative keys
    try:
      return self._source[index]
    except Exception as error:  # noqa: BLE001 -- decoders raise many types
      raise self._error(index, error) from error

  def __getitems__(self, indices):
    return [self[index] for index in indices]

  def __repr__(self) -> str:
    return f"NamedRecords({self.dataset!r}, {self.split!r}, {len(self)} records)"


class ConcatenatedRecords(Sequence):
  """The records of several sources, one after the other (a split union "a+b")."""

  def __init__(self, parts: Sequence[Sequence[dict[str, Any]]]):
    if not parts:
      raise ValueError("ConcatenatedRecords: needs at least one source")
    self._parts = list(parts)
    self._ends = np.cumsum([len(part) for part in self._parts])

  def __len__(self) -> int:
    return int(self._ends[-1])

  def __getitem__(self, index):
    if not isinstance(index, (int, np.integer)):
      raise TypeError(f"ConcatenatedRecords: index must be an int; got {type(index).__name__}")
    if not -len(self) <= index < len(self):
      raise IndexError(f"{self!r}: record {index} out of range [0, {len(self)})")
    index = int(index) % len(self)
    part = int(np.searchsorted(self._ends, index, side="right"))
    start = int(self._ends[part - 1]) if part else 0
    return self._parts[part][index - start]

  def __getitems__(self, indices):
    return [self[index] for index in indices]

  def __repr__(self) -> str:
    return f"ConcatenatedRecords({self._parts!r})"


def split_parts(split: str, available) -> list[str]:
  """The split names of `split` ("a" or a union "a+b+..."), each checked against `available`."""
  parts = [part.strip() for part in str(split).split("+")]
  available = sorted(available)
  bad = [part for part in parts if part not in available]
  if bad:
    raise ValueError(f"no split {bad[0]!r} (in {split!r}); available: {available}, or a union "
                     f"of them written 'a+b' (e.g. {'+'.join(available[:2])!r})")
  if len(set(parts)) != len(parts):
    raise ValueError(f"split {split!r} names a split twice; a union lists each split once")
  return parts


def _register(name: str) -> None:
  base = name.split("/")[0].split(":")[0]
  if base in LOCAL_BUILDERS:
    importlib.import_module(LOCAL_BUILDERS[base])


@contextlib.contextmanager
def _stdout_to_log():
  """What is printed to stdout inside the block goes to the log file only, line by line."""
  buffer = io.StringIO()
  try:
    with contextlib.redirect_stdout(buffer):
      yield
  finally:
    for line in buffer.getvalue().splitlines():
      if line.strip():
        logging.info("%s", line, extra={"console": False})


def prepared_builder(name: str, data_dir: str | None, *, auto_build: bool = True):
  """The TFDS builder of `name`, prepared in array_record format.

  Self-building datasets are generated when absent; any other missing
  dataset raises DatasetNotFoundError naming the directory searched and the
  command that builds it.
  """
  import tensorflow_datasets as tfds  # Deferred: heavy import.

  _register(name)
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  base, _, config_name = name.split(":")[0].partition("/")
  if auto_build and base in SELF_BUILDING:
    module = importlib.import_module(LOCAL_BUILDERS[base])
    logging.info("building %s in %s (first use; generated offline)", name,
                 data_dir or "~/tensorflow_datasets")
    with _stdout_to_log():  # TFDS prints its build banners: run.log only
      return module.ensure_built(config_name or "default", data_dir)
  raise DatasetNotFoundError(
      f"dataset {name!r} is not prepared in {builder.data_dir!r} (config.data.data_dir="
      f"{data_dir!r}); expected TFDS array_record files there. Build it with: "
      f"tfds build {base} --imports=tfds_builders "
      f"--data_dir={data_dir or '~/tensorflow_datasets'} [--manual_dir=...] (see the README)")


def load_source(data: ml_collections.ConfigDict, split: str) -> Sequence[dict[str, Any]]:
  """`tfds.data_source` for `data.name` and `split`, building it if allowed.

  `split` is one of the dataset's splits or a union "a+b" of them (records of a, then b).
  """
  import tensorflow_datasets as tfds

  builder = prepared_builder(data.name, data.get("data_dir"), auto_build=data.get("auto_build", True))
  try:
    parts = split_parts(split, builder.info.splits)
  except ValueError as error:
    raise ValueError(f"dataset {data.name!r}: {error}") from None
  sources = [NamedRecords(tfds.data_source(data.name, split=part, data_dir=data.get("data_dir"),
                                           download=False), dataset=data.name, split=part)
             for part in parts]
  return sources[0] if len(sources) == 1 else ConcatenatedRecords(sources)
