"""What the builders of official releases unpacked into `manual_dir` share: the check that
each release is there (an error naming the missing path and its archive) and the reading
of the releases' split lists.
"""
from __future__ import annotations

import pathlib
from typing import Iterable


def require_unpacked(manual_dir: pathlib.Path, needed: Iterable[tuple[pathlib.Path, str]], *,
                     readme: str) -> None:
  """FileNotFoundError naming the first missing path of `needed` ((path, its archive))."""
  for path, archive in needed:
    if not path.exists():
      raise FileNotFoundError(f"manual_dir {manual_dir}: missing {path}; unpack {archive} into "
                              f"manual_dir as is (see {readme})")


def read_ids(path: pathlib.Path) -> list[str]:
  """Ids of a split list: the first word of every non-blank line (VOC's ImageSets lists
  hold one id per line)."""
  if not path.is_file():
    raise FileNotFoundError(f"{path}: missing split list")
  ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
  if not ids:
    raise ValueError(f"{path}: empty split list")
  return ids
