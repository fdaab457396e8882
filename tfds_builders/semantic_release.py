"""What the release-format semantic segmentation builders share (`cityscapes_hier`,
`ade20k`, `mapillary_vistas`): label PNGs read as class indices, a lookup table from the
release's label ids to the finest classes of a label tree, and one example layout.

Every such builder stores

  image      the release's image file (JPEG or PNG bytes as released)
  image/id   the file stem, e.g. "aachen_000000_000019" or "ADE_train_00000001"
  label      HxW uint8: the finest class of the dataset's label tree, 255 = ignore

and the tree in `info.metadata` (`jhseg.label_tree.LabelTree.from_metadata`); coarser
levels follow from the tree (`LabelTree.map_labels`), so they are not stored twice.

Label PNGs are read with PIL without any palette conversion (Mapillary's labels are
palette images whose indices are the class ids; converting to RGB would lose them).
"""
from __future__ import annotations

import pathlib
from typing import Mapping

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import bad_files
from tfds_builders import builder_base

IGNORE_LABEL = 255
# Release label ids are read from 8- or 16-bit PNGs.
_MAX_RELEASE_ID = 1 << 16


def lookup_table(mapping: Mapping[int, int]) -> np.ndarray:
  """int32 table over release ids 0..65535: mapping[id] (a class or IGNORE_LABEL), -1 where
  the id is not in `mapping` (an id the release does not define)."""
  table = np.full(_MAX_RELEASE_ID, -1, np.int32)
  for release_id, class_id in mapping.items():
    if not 0 <= int(release_id) < _MAX_RELEASE_ID:
      raise ValueError(f"lookup_table: release id {release_id} outside 0..{_MAX_RELEASE_ID - 1}")
    if not (0 <= int(class_id) < IGNORE_LABEL or int(class_id) == IGNORE_LABEL):
      raise ValueError(f"lookup_table: release id {release_id} maps to {class_id}; expected "
                       f"a class id 0..{IGNORE_LABEL - 1} or the ignore label {IGNORE_LABEL}")
    table[int(release_id)] = int(class_id)
  table.flags.writeable = False
  return table


def read_label_png(path: pathlib.Path) -> np.ndarray:
  """2-D integer array of a single-channel (grey or palette) label PNG; errors name the file."""
  from PIL import Image  # pylint: disable=import-outside-toplevel

  def read(file: pathlib.Path) -> np.ndarray:
    with Image.open(file) as image:
      if image.format != "PNG":
        raise bad_files.BadFileError(f"{file}: expected a PNG label map, got {image.format}")
      if image.mode not in ("L", "P", "I", "I;16"):
        raise bad_files.BadFileError(
            f"{file}: expected a single-channel label PNG (mode L, P or I;16) holding label "
            f"ids, got mode {image.mode}")
      return np.asarray(image)

  return bad_files.read(path, read)


def map_label_ids(raw: np.ndarray, table: np.ndarray, *, source: str | pathlib.Path) -> np.ndarray:
  """Release ids -> uint8 class ids; an id outside the release's table fails naming `source`."""
  raw = np.asarray(raw)
  if raw.ndim != 2:
    raise bad_files.BadFileError(f"{source}: expected a 2-D label map, got shape {raw.shape}")
  values = np.unique(raw)
  known = (values >= 0) & (values < len(table))
  unknown = values[~known | (table[np.clip(values, 0, len(table) - 1)] < 0)]
  if unknown.size:
    raise bad_files.BadFileError(f"{source}: label ids {unknown[:10].tolist()} are not in the "
                                 f"release's label table")
  return table[raw].astype(np.uint8)


def features(*, image_format: str, label_doc: str) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      **builder_base.image_features(image_format),
      "label": builder_base.zlib_array(2, dtype=np.uint8, doc=label_doc),
  })


def make_example(image_id: str, image_path: pathlib.Path, label_path: pathlib.Path,
                 table: np.ndarray, *, image_format: str) -> dict:
  """One example from an image and its label PNG; a size mismatch names both files.

  `image_format` is PIL's name ("JPEG", "PNG"): the image is fully decoded to catch
  truncated files, and a file of another format is refused (TFDS keeps the bytes).
  """
  if not label_path.is_file():
    raise FileNotFoundError(f"{label_path}: missing label map for image {image_path}")
  shape = bad_files.decode_image(image_path, image_format=image_format)
  raw = read_label_png(label_path)
  if raw.shape != shape:
    raise bad_files.BadFileError(f"{label_path}: label map of shape {raw.shape} but its image "
                                 f"{image_path} is {shape[0]}x{shape[1]}")
  return {"image": str(image_path), "image/id": image_id,
          "label": map_label_ids(raw, table, source=label_path)}


def generate_examples(builder, split: str, pairs, mapping, *, image_format: str):
  """`builder.checked_examples` over (id, image path, label path) pairs, in id order, each
  made by `make_example` with the release's label `mapping`."""
  by_id = {image_id: (image, label) for image_id, image, label in pairs}
  yield from builder.checked_examples(
      split, sorted(by_id), lambda image_id: make_example(
          image_id, *by_id[image_id], mapping, image_format=image_format))
