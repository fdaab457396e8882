"""Reading the PartImageNet release (He et al., ECCV 2022; github.com/TACJu/PartImageNet).

The release (PartImageNet_OOD.zip, or PartImageNet_Seg.zip, from the Hugging Face dataset
`turkeyju/PartImageNet`) holds, per split s in {train, val, test}:

  s.json                   COCO-style annotations ("strictly follow the coco style"):
    images       [{"id", "file_name" (e.g. "n01440764_10029.JPEG"), "height", "width"}]
    annotations  [{"id", "image_id", "category_id", "segmentation" (polygons: lists of
                   x0, y0, x1, y1, ... in pixel coordinates), "area", "bbox" [x, y, w, h],
                   "iscrowd"}]
    categories   [{"id" (0-based), "name" (e.g. "Quadruped Head"), "supercategory"
                   (e.g. "Quadruped")}]          40 parts of 11 objects
  s/<synset>/<file_name>   the ImageNet JPEG (s.zip inside the release zip, unzipped);
                           the synset is the file name's prefix before '_'.

Accepted layouts under manual_dir (first found wins), with `PartImageNet_OOD/`,
`PartImageNet_Seg/` or `PartImageNet/` as an optional top folder:
  s.json + s/<synset>/<file>                     the release unzipped in place
  annotations/s.json + images/s/<synset>/<file>  the layout of CAST's GETTING_STARTED
An image may also sit directly in the split folder (s/<file>).

Label maps (what CAST's evaluation notebook and PDiscoFormer build from these files):
  part_class     0 background, 1..K: categories in the file's order (sorted by id)
  object_class   0 background, 1..M: supercategories in order of first appearance
  part_instances 0 background, 1..n: the image's annotations in file order
Annotations are painted in file order (a later one overwrites an earlier one, as
`annToMask` painting in CAST's notebook); annotations with area 0 or iscrowd 1 are
skipped, and a polygon of fewer than 3 points is replaced by its box, as PDiscoFormer's
loader does.

Rasterisation: a pixel (row r, column c) is inside a polygon when its centre
(c + 0.5, r + 0.5) is (scikit-image's `polygon` on the vertices shifted by -0.5).
pycocotools' `annToMask` (not a dependency of this repository) uses its own scan
conversion and can differ on boundary pixels.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Sequence

import numpy as np

SPLITS = ("train", "val", "test")
TOP_FOLDERS = ("", "PartImageNet_OOD", "PartImageNet_Seg", "PartImageNet")


@dataclasses.dataclass(frozen=True)
class SplitFiles:
  annotations: pathlib.Path
  images_dir: pathlib.Path


def find_splits(manual_dir: pathlib.Path) -> dict[str, SplitFiles]:
  """The splits present under `manual_dir` (module docstring); errors say what is missing."""
  found: dict[str, SplitFiles] = {}
  zipped = []
  for top in TOP_FOLDERS:
    root = manual_dir / top if top else manual_dir
    for split in SPLITS:
      if split in found:
        continue
      for annotation_file, images in ((root / f"{split}.json", root / split),
                                  (root / "annotations" / f"{split}.json",
                                   root / "images" / split)):
        if annotation_file.is_file():
          if not images.is_dir():
            if (images.parent / f"{split}.zip").is_file():
              zipped.append(images.parent / f"{split}.zip")
              continue
            raise FileNotFoundError(f"{annotation_file} found but no image folder {images}/ "
                                    f"(expected {images}/<synset>/<file_name>)")
          found[split] = SplitFiles(annotation_file, images)
          break
  if zipped and not found:
    raise FileNotFoundError(f"partimagenet: unzip {', '.join(map(str, zipped))} in place "
                            f"(the release zip holds one zip of images per split)")
  if not found:
    raise FileNotFoundError(
        f"partimagenet: no split found in {manual_dir}; expected the release unzipped there: "
        f"train.json, val.json, test.json and the folders train/, val/, test/ "
        f"(or annotations/<split>.json and images/<split>/)")
  return found


@dataclasses.dataclass(frozen=True)
class Category:
  id: int
  name: str
  supercategory: str


@dataclasses.dataclass(frozen=True)
class ImageRecord:
  id: int
  file_name: str
  height: int
  width: int
  annotations: tuple[dict[str, Any], ...]

  @property
  def synset(self) -> str:
    return pathlib.PurePath(self.file_name).name.split("_")[0]


@dataclasses.dataclass(frozen=True)
class Release:
  """One split's annotation file, checked."""
  path: pathlib.Path
  categories: tuple[Category, ...]
  images: tuple[ImageRecord, ...]

  @property
  def part_names(self) -> tuple[str, ...]:
    return tuple(c.name for c in self.categories)

  @property
  def object_names(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c.supercategory for c in self.categories))

  def part_to_object(self) -> tuple[int, ...]:
    """Object class (1..M) of each part class 1..K, with 0 -> 0 first."""
    objects = self.object_names
    return (0,) + tuple(objects.index(c.supercategory) + 1 for c in self.categories)


def _field(record: dict, name: str, kind: type, path: pathlib.Path, where: str):
  if not isinstance(record, dict) or not isinstance(record.get(name), kind):
    value = record.get(name) if isinstance(record, dict) else record
    raise ValueError(f"{path}: {where}: field {name!r} must be a {kind.__name__}; got "
                     f"{value!r:.80}")
  return record[name]


def read_release(path: pathlib.Path) -> Release:
  """Parses and checks one `<split>.json`; errors name the file, record and field."""
  data = json.loads(path.read_text())
  for key in ("images", "annotations", "categories"):
    if not isinstance(data.get(key), list):
      raise ValueError(f"{path}: expected a COCO-style object with a list {key!r}; has "
                       f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
  categories = []
  for i, c in enumerate(sorted(data["categories"], key=lambda c: c.get("id", -1))):
    where = f"categories[{i}]"
    categories.append(Category(_field(c, "id", int, path, where),
                               _field(c, "name", str, path, where),
                               _field(c, "supercategory", str, path, where)))
  category_ids = {c.id for c in categories}
  per_image: dict[int, list] = {}
  for i, a in enumerate(data["annotations"]):
    where = f"annotations[{i}] (id {a.get('id')})"
    image_id = _field(a, "image_id", int, path, where)
    category = _field(a, "category_id", int, path, where)
    if category not in category_ids:
      raise ValueError(f"{path}: {where}: category_id {category} is not among the "
                       f"categories {sorted(category_ids)}")
    per_image.setdefault(image_id, []).append(a)
  images = []
  for i, im in enumerate(data["images"]):
    where = f"images[{i}]"
    image_id = _field(im, "id", int, path, where)
    images.append(ImageRecord(image_id, _field(im, "file_name", str, path, where),
                              _field(im, "height", int, path, where),
                              _field(im, "width", int, path, where),
                              tuple(per_image.pop(image_id, ()))))
  if per_image:
    raise ValueError(f"{path}: annotations refer to image ids {sorted(per_image)[:5]} that "
                     f"are not in 'images'")
  return Release(path, tuple(categories), tuple(images))


def polygon_mask(polygon: Sequence[float], height: int, width: int) -> np.ndarray:
  """(H, W) bool: pixels whose centre lies inside the polygon (x0, y0, x1, y1, ...)."""
  from skimage import draw  # pylint: disable=g-import-not-at-top
  xy = np.asarray(polygon, np.float64).reshape(-1, 2)
  rows, cols = draw.polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape=(height, width))
  mask = np.zeros((height, width), bool)
  mask[rows, cols] = True
  return mask


def annotation_mask(annotation: dict, height: int, width: int, *, path: pathlib.Path
                    ) -> np.ndarray:
  """The union of an annotation's polygons (a polygon under 3 points becomes its box)."""
  segmentation = annotation.get("segmentation")
  if not isinstance(segmentation, list):
    raise ValueError(f"{path}: annotation id {annotation.get('id')}: field 'segmentation' "
                     f"must be a list of polygons (the release has no RLE); got "
                     f"{type(segmentation).__name__}")
  mask = np.zeros((height, width), bool)
  for polygon in segmentation:
    if not isinstance(polygon, list) or len(polygon) % 2:
      raise ValueError(f"{path}: annotation id {annotation.get('id')}: a polygon must be a "
                       f"flat list of x, y pairs; got {polygon!r:.80}")
    if len(polygon) < 6:
      x, y, w, h = annotation["bbox"]
      polygon = [x, y, x, y + h, x + w, y + h, x + w, y]
    mask |= polygon_mask(polygon, height, width)
  return mask


def label_maps(release: Release, image: ImageRecord) -> dict[str, np.ndarray]:
  """part_class, object_class (uint8) and part_instances (int32) maps (module docstring)."""
  index = {c.id: k + 1 for k, c in enumerate(release.categories)}
  to_object = release.part_to_object()
  part = np.zeros((image.height, image.width), np.uint8)
  instances = np.zeros((image.height, image.width), np.int32)
  number = 0
  for annotation in image.annotations:
    if annotation.get("area", 1) == 0 or annotation.get("iscrowd", 0) == 1:
      continue
    mask = annotation_mask(annotation, image.height, image.width, path=release.path)
    number += 1
    part[mask] = index[annotation["category_id"]]
    instances[mask] = number
  return {"part_class": part, "object_class": np.asarray(to_object, np.uint8)[part],
          "part_instances": instances}


def image_path(images_dir: pathlib.Path, file_name: str) -> pathlib.Path:
  """<split>/<synset>/<file>, else <split>/<file_name>; FileNotFoundError naming both."""
  name = pathlib.PurePath(file_name).name
  candidates = (images_dir / name.split("_")[0] / name, images_dir / file_name)
  for candidate in candidates:
    if candidate.is_file():
      return candidate
  raise FileNotFoundError(f"partimagenet: image {file_name!r} not found; looked for "
                          f"{candidates[0]} and {candidates[1]}")
