"""Random-access data sources: TFDS datasets prepared in array_record format.

Datasets of this repository (`tfds_builders/`) are registered on demand.
Those that need no download (the synthetic scenes) are built automatically
the first time a run asks for them, so every default run works offline.
"""
from __future__ import annotations

import importlib
from typing import Any, Sequence

import ml_collections

# Builders that live in this repository: dataset name -> module that registers it.
LOCAL_BUILDERS = {
    "synthetic_scenes": "tfds_builders.synthetic_scenes",
    "bsds500": "tfds_builders.bsds500",
    "ultrametric_pascal_part": "tfds_builders.ultrametric_pascal_part",
    "voc2012_sbd": "tfds_builders.voc2012_sbd",
}
# Local builders that generate their data: each module's `ensure_built(config, data_dir)`
# builds it on first use.
SELF_BUILDING = ("synthetic_scenes",)


class DatasetNotFoundError(FileNotFoundError):
  pass


def _register(name: str) -> None:
  base = name.split("/")[0].split(":")[0]
  if base in LOCAL_BUILDERS:
    importlib.import_module(LOCAL_BUILDERS[base])


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
    return module.ensure_built(config_name or "default", data_dir)
  raise DatasetNotFoundError(
      f"dataset {name!r} is not prepared in {builder.data_dir!r} (config.data.data_dir="
      f"{data_dir!r}); expected TFDS array_record files there. Build it with: "
      f"tfds build {base} --imports=tfds_builders "
      f"--data_dir={data_dir or '~/tensorflow_datasets'} [--manual_dir=...] (see the README)")


def load_source(data: ml_collections.ConfigDict, split: str) -> Sequence[dict[str, Any]]:
  """`tfds.data_source` for `data.name` and `split`, building it if allowed."""
  import tensorflow_datasets as tfds

  builder = prepared_builder(data.name, data.get("data_dir"), auto_build=data.get("auto_build", True))
  if split not in builder.info.splits:
    raise ValueError(f"dataset {data.name!r} has no split {split!r}; available: "
                     f"{sorted(builder.info.splits)}")
  return tfds.data_source(data.name, split=split, data_dir=data.get("data_dir"), download=False)
