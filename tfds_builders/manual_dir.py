"""What the builders of official releases unpacked into `manual_dir` share: the check that
each release is there (an error naming the missing path and its archive) and the reading
of the releases' split lists.
"""
from __future__ import annotations

import os
import pathlib
from typing import Iterable


def require_unpacked(manual_dir: pathlib.Path, needed: Iterable[tuple[pathlib.Path, str]], *,
                     readme: str) -> None:
  """FileNotFoundError naming the first missing path of `needed` ((path, its archive))."""
  for path, archive in needed:
    if not path.exists():
      raise FileNotFoundError(f"manual_dir {manual_dir}: missing {path}; unpack {archive} into "
                              f"manual_dir as is (see {readme})")


def read_ids(path: os.PathLike | str) -> tuple[str, ...]:
  """Ids of a VOC-style split list: the first word of every non-blank line (VOC's
  ImageSets/Main/<class>_<split>.txt add a second). A missing or empty list, or a first
  word that is no image id (a path, an overlong line), is an error naming the file."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: missing split list")
  ids = []
  for number, line in enumerate(path.read_text().splitlines(), start=1):
    words = line.split()
    if not words:
      continue
    if "/" in words[0] or len(words[0]) > 64:
      raise ValueError(f"{path}: line {number}: expected an image id such as "
                       f"'2008_000652', got {line!r}")
    ids.append(words[0])
  if not ids:
    raise ValueError(f"{path}: empty split list")
  return tuple(ids)
