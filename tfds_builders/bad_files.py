"""Validation of every file a builder stores, and what to do with a bad one.

Each builder decodes every image completely (a truncated JPEG fails here, not inside grain
at the first training batch) and validates every annotation before yielding an example.
A bad file raises `BadFileError` naming it. What happens then is an explicit choice:

  fail (default)  the build stops with the error;
  skip            the example is left out with a warning, and each split ends with a
                  warning giving the number of skipped files and the first ones.

The choice is the builders' keyword `bad_files=` (Python: `Builder(bad_files="skip")`), or,
for `tfds build` (which cannot pass builder keywords), the environment variable
`JHSEG_BAD_FILES=skip`. A missing file is never skipped: it is a wrong manual_dir layout.
"""
from __future__ import annotations

import os
import pathlib
from typing import Callable, TypeVar
import warnings

POLICIES = ("fail", "skip")
ENV_VARIABLE = "JHSEG_BAD_FILES"
_FIRST = 5  # files named in a split's summary warning

T = TypeVar("T")


class BadFileError(ValueError):
  """A file in the manual_dir cannot be decoded or does not hold what it must."""


def resolve_policy(policy: str | None) -> str:
  """`policy`, else $JHSEG_BAD_FILES, else "fail"; an unknown value fails naming the valid ones."""
  source = "bad_files"
  if policy is None:
    policy, source = os.environ.get(ENV_VARIABLE, "fail"), f"${ENV_VARIABLE}"
  if policy not in POLICIES:
    raise ValueError(f"{source}={policy!r}: expected one of {', '.join(POLICIES)}")
  return policy


def read(path: os.PathLike | str, reader: Callable[[pathlib.Path], T]) -> T:
  """`reader(path)`, with any decoding error turned into a BadFileError naming `path`."""
  path = pathlib.Path(path)
  try:
    return reader(path)
  except (BadFileError, FileNotFoundError):  # a missing file is a layout error, never skipped
    raise
  except Exception as error:  # noqa: BLE001 -- PIL / scipy raise many types for corrupt files
    message = str(error)
    if str(path) not in message:
      message = f"{path}: {type(error).__name__}: {message}"
    raise BadFileError(message) from error


def decode_image(path: os.PathLike | str, *, image_format: str = "JPEG") -> tuple[int, int]:
  """(height, width) of an image file after decoding every pixel; BadFileError if it fails.

  `image_format` is PIL's name of the format the builder stores the bytes as (TFDS keeps the
  file's bytes, so a PNG named .jpg would be stored as a JPEG feature).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  def decode(file: pathlib.Path) -> tuple[int, int]:
    with Image.open(file) as image:
      if image.format != image_format:
        raise BadFileError(f"{file}: expected a {image_format} image, got {image.format}")
      image.load()  # decodes everything: raises on truncated or corrupt data
      width, height = image.size
    if min(height, width) < 1:
      raise BadFileError(f"{file}: empty image ({height}x{width})")
    return height, width

  return read(path, decode)


class BadFiles:
  """Applies the policy to the examples of one split: `make(key, build)`, then `report()`."""

  def __init__(self, policy: str, *, dataset: str, split: str):
    self.policy = resolve_policy(policy)
    self.dataset, self.split = dataset, split
    self.skipped: list[tuple[str, str]] = []  # (example key, error)

  def make(self, key: str, build: Callable[[], T]) -> T | None:
    """`build()`, or None when it raised a BadFileError and the policy is skip."""
    try:
      return build()
    except BadFileError as error:
      if self.policy == "fail":
        if hasattr(error, "add_note"):  # Python >= 3.11; the message already names the file
          error.add_note(f"in {self.dataset} split {self.split}, example {key}; "
                         f"bad_files='skip' or ${ENV_VARIABLE}=skip leaves such examples out")
        raise
      self.skipped.append((key, str(error)))
      warnings.warn(f"{self.dataset} split {self.split}: skipping example {key}: {error}",
                    stacklevel=2)
      return None

  def report(self) -> None:
    """One warning with the number of skipped examples of the split and the first ones."""
    if self.skipped:
      first = "; ".join(f"{key} ({error})" for key, error in self.skipped[:_FIRST])
      warnings.warn(f"{self.dataset} split {self.split}: skipped {len(self.skipped)} example(s) "
                    f"with bad files; first: {first}", stacklevel=2)
