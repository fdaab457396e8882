"""Reader for the official Pascal-Part annotation files (`Annotations_Part/<id>.mat`).

Format of the release (Chen et al., "Detect what you can", CVPR 2014), as written by
MATLAB and read by `scipy.io.loadmat`:

  anno                      1x1 struct
    .imname                 char, the VOC image id (e.g. '2008_000652')
    .objects                1xN struct array (N may be 0)
      .class                char, VOC class name (the release spells the dining table 'table')
      .class_ind            VOC class index, 1..20
      .mask                 HxW uint8 in {0, 1}
      .parts                1xP struct array, 0x0 when the object has no part annotation
        .part_name          char (e.g. 'head', 'lear', 'wheel_1')
        .mask               HxW uint8 in {0, 1}

Every malformed field raises `PascalPartFormatError` naming the file, the field and what was
expected, so a corrupt file among ten thousand is found at once.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import scipy.io

from tfds_builders import bad_files

# VOC class names in index order (class_ind - 1), spelled as in the Pascal-Part release.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "table", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


class PascalPartFormatError(bad_files.BadFileError):
  """A Pascal-Part .mat file does not follow the release format."""


@dataclasses.dataclass(frozen=True)
class Part:
  name: str
  mask: np.ndarray  # bool, HxW


@dataclasses.dataclass(frozen=True)
class AnnotatedObject:
  class_name: str
  class_index: int  # 1..20, VOC order
  mask: np.ndarray  # bool, HxW
  parts: tuple[Part, ...]


@dataclasses.dataclass(frozen=True)
class PascalPartAnnotation:
  image_id: str
  objects: tuple[AnnotatedObject, ...]


def _fail(path: os.PathLike | str, field: str, expected: str, got: object) -> PascalPartFormatError:
  return PascalPartFormatError(
      f"{os.fspath(path)}: field `{field}`: expected {expected}, got {got}")


def _struct_array(path, field: str, value, names: tuple[str, ...]) -> list[np.void]:
  """The elements of a MATLAB struct array (any shape, possibly empty) with the given fields."""
  if not isinstance(value, np.ndarray) or value.dtype.names is None:
    if isinstance(value, np.ndarray) and value.size == 0:
      return []  # MATLAB `[]` where a struct array was expected: no elements.
    raise _fail(path, field, f"a struct array with fields {names}", type(value).__name__)
  missing = [n for n in names if n not in value.dtype.names]
  if missing:
    raise _fail(path, field, f"a struct array with fields {names}",
                f"fields {value.dtype.names} (missing {missing})")
  return list(value.reshape(-1))


def _string(path, field: str, value) -> str:
  if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.size == 1:
    return str(value.reshape(-1)[0])
  if isinstance(value, str):
    return value
  raise _fail(path, field, "a MATLAB char string", repr(value))


def _class_index(path, field: str, value) -> int:
  array = np.asarray(value)
  if array.size != 1 or array.dtype.kind not in "iuf":
    raise _fail(path, field, "one integer in 1..20", repr(value))
  index = float(array.reshape(-1)[0])
  if index != int(index) or not 1 <= index <= len(VOC_CLASSES):
    raise _fail(path, field, "one integer in 1..20", index)
  return int(index)


def _mask(path, field: str, value, shape: tuple[int, int] | None) -> np.ndarray:
  if not isinstance(value, np.ndarray) or value.ndim != 2 or value.dtype.kind not in "biuf":
    got = (f"{value.dtype} array of shape {value.shape}" if isinstance(value, np.ndarray)
           else type(value).__name__)
    raise _fail(path, field, "a 2-D numeric array (HxW uint8 in {0,1})", got)
  if shape is not None and value.shape != shape:
    raise _fail(path, field, f"shape {shape} (the shape of the first object mask)", value.shape)
  if not np.isin(value, (0, 1)).all():
    raise _fail(path, field, "values in {0, 1}", np.unique(value)[:10])
  return value.astype(bool)


def read_annotation(path: os.PathLike | str) -> PascalPartAnnotation:
  """Reads one `Annotations_Part/<id>.mat` file; raises `PascalPartFormatError` if malformed."""
  try:
    contents = scipy.io.loadmat(os.fspath(path))
  except Exception as error:  # scipy raises several types for unreadable files.
    raise PascalPartFormatError(
        f"{os.fspath(path)}: not a readable MATLAB .mat file ({error})") from error
  if "anno" not in contents:
    variables = sorted(k for k in contents if not k.startswith("__"))
    raise _fail(path, "anno", "a variable `anno` (struct with imname, objects)",
                f"variables {variables}")
  anno = _struct_array(path, "anno", contents["anno"], ("imname", "objects"))
  if len(anno) != 1:
    raise _fail(path, "anno", "a 1x1 struct", f"{len(anno)} elements")
  image_id = _string(path, "anno.imname", anno[0]["imname"])
  stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
  if image_id != stem:
    raise _fail(path, "anno.imname", f"the file's own id {stem!r}", repr(image_id))

  objects = []
  shape = None
  raw_objects = _struct_array(path, "anno.objects", anno[0]["objects"],
                              ("class", "class_ind", "mask", "parts"))
  for k, raw in enumerate(raw_objects):
    where = f"anno.objects({k + 1})"
    class_name = _string(path, f"{where}.class", raw["class"])
    class_index = _class_index(path, f"{where}.class_ind", raw["class_ind"])
    if VOC_CLASSES[class_index - 1] != class_name:
      raise _fail(path, f"{where}.class",
                  f"{VOC_CLASSES[class_index - 1]!r} (VOC class {class_index} = class_ind)",
                  repr(class_name))
    mask = _mask(path, f"{where}.mask", raw["mask"], shape)
    shape = mask.shape
    parts = []
    for j, raw_part in enumerate(_struct_array(path, f"{where}.parts", raw["parts"],
                                               ("part_name", "mask"))):
      part_where = f"{where}.parts({j + 1})"
      parts.append(Part(name=_string(path, f"{part_where}.part_name", raw_part["part_name"]),
                        mask=_mask(path, f"{part_where}.mask", raw_part["mask"], shape)))
    objects.append(AnnotatedObject(class_name=class_name, class_index=class_index, mask=mask,
                                   parts=tuple(parts)))
  return PascalPartAnnotation(image_id=image_id, objects=tuple(objects))
