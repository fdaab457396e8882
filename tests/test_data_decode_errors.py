"""A record that cannot be decoded fails naming the dataset, split and record (issue 11.5).

Reproduces the reported case: a truncated JPEG stored by a build that did not validate images
(the builder's check is switched off here), read through `jhseg.data.load_source` and grain.
"""
import shutil

import ml_collections
import numpy as np
import pytest

from jhseg import data as data_lib
from jhseg.data import sources

# In the builder's default (COB) split lists 2008_000652 and 2008_000700 are in "val",
# 2008_000726 in "train"; the truncated JPEG is 2008_000700.
IDS = ("2008_000652", "2008_000700", "2008_000726")
SPLIT = "val"


def _size_only(path, *, image_format="JPEG"):
  """What the builders did before: the image's size from its header, no decoding."""
  del image_format
  from PIL import Image
  with Image.open(path) as image:
    return image.size[::-1]


@pytest.fixture(name="data_with_a_truncated_record", scope="module")
def fixture_data_with_a_truncated_record(shared_data, tmp_path_factory):
  import tensorflow_datasets as tfds
  from tfds_builders import bad_files
  from tfds_builders.ultrametric_pascal_part import Builder
  sample = shared_data / "pascal_part_sample"
  if not sample.is_dir():
    pytest.skip(f"Pascal-Part sample not found at {sample}")
  tmp_path = tmp_path_factory.mktemp("decode_errors")
  manual = tmp_path / "manual"
  for folder in ("Annotations_Part", "JPEGImages"):
    (manual / folder).mkdir(parents=True)
  for image_id in IDS:
    shutil.copy(sample / "Annotations_Part" / f"{image_id}.mat", manual / "Annotations_Part")
    jpeg = (sample / "JPEGImages" / f"{image_id}.jpg").read_bytes()
    if image_id == "2008_000700":
      jpeg = jpeg[:len(jpeg) // 2]
    (manual / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg)
  builder = Builder(data_dir=str(tmp_path / "tfds"))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(bad_files, "decode_image", _size_only)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  source = builder.as_data_source(split=SPLIT)
  ids = [r.decode() if isinstance(r, bytes) else r
         for r in (source[i]["image/id"] for i in range(len(source)) if i != _bad(source))]
  assert ids == ["2008_000652"]
  return ml_collections.ConfigDict({"name": "ultrametric_pascal_part/hierarchical",
                                    "data_dir": str(tmp_path / "tfds"), "auto_build": False})


def _bad(source):
  for i in range(len(source)):
    try:
      source[i]
    except Exception:  # noqa: BLE001 -- PIL: OSError; TFDS's OpenCV decoder: AttributeError
      return i
  raise AssertionError("no record fails to decode")


def test_load_source_names_dataset_split_and_record(data_with_a_truncated_record):
  source = data_lib.load_source(data_with_a_truncated_record, SPLIT)
  bad = _bad(source._source)  # pylint: disable=protected-access
  good = 1 - bad
  assert source[good]["image"].dtype == np.uint8
  with pytest.raises(sources.RecordDecodeError,
                     match=rf"dataset 'ultrametric_pascal_part/hierarchical' split '{SPLIT}' record "
                           rf"{bad}: cannot decode it \("):
    source[bad]
  with pytest.raises(IndexError):
    source[len(source)]


def test_grain_pipeline_error_names_the_record(data_with_a_truncated_record):
  source = data_lib.load_source(data_with_a_truncated_record, SPLIT)
  batches = iter(data_lib.train_dataset(source, [], seed=0, local_batch_size=2, num_threads=1))
  with pytest.raises(Exception) as error:  # grain may wrap it; the message must survive
    next(batches)
  text = "".join(str(e) for e in (error.value, error.value.__cause__, error.value.__context__) if e)
  assert f"dataset 'ultrametric_pascal_part/hierarchical' split '{SPLIT}' record" in text
