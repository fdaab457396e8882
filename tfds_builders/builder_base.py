"""What every jhseg builder shares: array_record by default, the bad-file policy, and the
feature formats (`image_features`, `zlib_array`).

`tfds.data_source` and grain read only random-access formats, so a builder writes
array_record unless `file_format` (`tfds build --file_format`) asks for another.
`bad_files` ("fail" or "skip", default $JHSEG_BAD_FILES else "fail") is what a builder does
with a file that does not decode or validate (see `bad_files`).
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import bad_files as bad_files_lib

DEFAULT_FILE_FORMAT = "array_record"


class JhsegBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """GeneratorBasedBuilder writing array_record by default, with a bad-file policy."""

  def __init__(self, *, file_format=None, bad_files: str | None = None, **kwargs):
    super().__init__(file_format=file_format or DEFAULT_FILE_FORMAT, **kwargs)
    self.bad_files = bad_files_lib.resolve_policy(bad_files)

  def checked_examples(self, split: str, keys, make_example):
    """(key, make_example(key)) for every key, the bad ones failing or skipped per policy."""
    guard = bad_files_lib.BadFiles(self.bad_files, dataset=self.name, split=split)
    kept = 0
    for key in keys:
      example = guard.make(key, lambda key=key: make_example(key))
      if example is not None:
        kept += 1
        yield key, example
    guard.report()
    if not kept and guard.skipped:  # TFDS would fail with "No examples were yielded"
      raise bad_files_lib.BadFileError(
          f"{self.name} split {split}: all {len(guard.skipped)} examples have bad files, e.g. "
          f"{guard.skipped[0][1]}")


def image_features(encoding_format: str = "jpeg") -> dict[str, tfds.features.FeatureConnector]:
  """`image` (RGB, the release's encoded bytes kept as they are) and `image/id`."""
  return {"image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8,
                                       encoding_format=encoding_format),
          "image/id": tfds.features.Text()}


def zlib_array(rank: int, *, dtype, doc: str) -> tfds.features.Tensor:
  """An array of `rank` dimensions of any size, stored zlib-compressed: the format of
  every builder's label maps (and UCMs)."""
  return tfds.features.Tensor(shape=(None,) * rank, dtype=dtype,
                              encoding=tfds.features.Encoding.ZLIB, doc=doc)
