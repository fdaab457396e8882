"""Where the official releases are inside a manual_dir.

Each release is looked for at a few relative paths (extracted as-is, or flattened); the first
existing directory wins. When a required one is missing, the error lists every path tried and
the archive it comes from (see README.md).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib

# Release directory -> (candidate paths relative to manual_dir, archive providing it).
ANNOTATIONS_PART = (("Annotations_Part", "trainval/Annotations_Part",
                     "pascal_part/Annotations_Part"),
                    "Pascal-Part trainval.tar.gz (Annotations_Part/*.mat)")
JPEG_IMAGES = (("JPEGImages", "VOCdevkit/VOC2010/JPEGImages", "VOC2010/JPEGImages"),
               "PASCAL VOC2010 VOCtrainval_03-May-2010.tar (VOCdevkit/VOC2010/JPEGImages/*.jpg)")
CONTEXT_LABELS = (("trainval", "pascal_context/trainval"),
                  "PASCAL-Context trainval.tar.gz (trainval/*.mat, variable LabelMap)")


@dataclasses.dataclass(frozen=True)
class ReleaseLayout:
  annotations_dir: pathlib.Path  # Annotations_Part/
  images_dir: pathlib.Path  # JPEGImages/
  context_dir: pathlib.Path | None  # PASCAL-Context trainval/ (LabelMap .mat), if present


def _find(manual_dir: pathlib.Path, candidates: tuple[str, ...], glob: str) -> pathlib.Path | None:
  for relative in candidates:
    directory = manual_dir / relative
    if directory.is_dir() and next(directory.glob(glob), None) is not None:
      return directory
  return None


def _missing(manual_dir: pathlib.Path, release: tuple[tuple[str, ...], str], glob: str) -> FileNotFoundError:
  candidates, archive = release
  tried = ", ".join(str(manual_dir / c / glob) for c in candidates)
  return FileNotFoundError(f"manual_dir {manual_dir}: no files {tried}; expected the contents "
                           f"of {archive} (see tfds_builders/ultrametric_pascal_part/README.md)")


def find_layout(manual_dir: os.PathLike | str, *, require_context: bool) -> ReleaseLayout:
  """Locates the releases in `manual_dir`; raises FileNotFoundError naming what is missing."""
  manual_dir = pathlib.Path(manual_dir)
  annotations = _find(manual_dir, ANNOTATIONS_PART[0], "*.mat")
  if annotations is None:
    raise _missing(manual_dir, ANNOTATIONS_PART, "*.mat")
  images = _find(manual_dir, JPEG_IMAGES[0], "*.jpg")
  if images is None:
    raise _missing(manual_dir, JPEG_IMAGES, "*.jpg")
  # Pascal-Part's own archive may also hold a `trainval/` dir; Context files are `<id>.mat`
  # directly in it, which `*_*.mat` (VOC ids such as 2008_000652) tells apart.
  context = _find(manual_dir, CONTEXT_LABELS[0], "*_*.mat")
  if context is None and require_context:
    raise _missing(manual_dir, CONTEXT_LABELS, "*_*.mat")
  return ReleaseLayout(annotations_dir=annotations, images_dir=images, context_dir=context)
