"""TFDS `bsds500` builder on the real sample files laid out as the BSR release."""
import shutil

import numpy as np
import pytest

SPLIT_OF = {"2018": "test", "3063": "test", "5096": "train", "6046": "train", "8068": "val"}


@pytest.fixture(name="manual_dir")
def fixture_manual_dir(shared_data, tmp_path):
  sample = shared_data / "bsds500_bench"
  if not sample.is_dir():
    pytest.skip(f"BSDS benchmark sample not found at {sample}")
  root = tmp_path / "manual" / "BSR" / "BSDS500" / "data"
  for image_id, split in SPLIT_OF.items():
    for kind, ext in (("images", "jpg"), ("groundTruth", "mat")):
      (root / kind / split).mkdir(parents=True, exist_ok=True)
      shutil.copy(sample / kind / f"{image_id}.{ext}", root / kind / split)
  (root / "images" / "train" / "Thumbs.db").write_bytes(b"")  # as in the release; must be ignored
  return tmp_path / "manual"


def test_builds_array_record_with_every_annotator(manual_dir, tmp_path, shared_data):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jhseg.metrics import bsds_io  # pylint: disable=g-import-not-at-top
  from tfds_builders import bsds500  # pylint: disable=g-import-not-at-top

  builder = bsds500.Builder(data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  assert builder.info.file_format.value == "array_record"
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 2, "val": 1, "test": 2}
  source = tfds.data_source("bsds500", split="test", data_dir=str(tmp_path / "tfds"), download=False)
  records = {r["image/id"].decode() if isinstance(r["image/id"], bytes) else r["image/id"]: r
             for r in (source[k] for k in range(len(source)))}
  assert sorted(records) == ["2018", "3063"]
  sample = shared_data / "bsds500_bench"
  for image_id, record in records.items():
    gt = bsds_io.load_ground_truth(sample / "groundTruth" / f"{image_id}.mat")
    k, (h, w) = len(gt.segmentations), gt.shape
    assert record["segmentations"].shape == (k, h, w) and record["segmentations"].dtype == np.int32
    assert record["boundaries"].shape == (k, h, w) and record["boundaries"].dtype == np.bool_
    np.testing.assert_array_equal(record["segmentations"], np.stack(gt.segmentations))
    np.testing.assert_array_equal(record["boundaries"], np.stack(gt.boundaries))
    with Image.open(sample / "images" / f"{image_id}.jpg") as image:
      np.testing.assert_array_equal(record["image"], np.asarray(image))  # JPEG bytes stored unchanged


def test_evaluate_reads_tfds_ground_truth(manual_dir, tmp_path, shared_data):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from jhseg import evaluate  # pylint: disable=g-import-not-at-top
  from tfds_builders import bsds500  # pylint: disable=g-import-not-at-top

  data_dir = tmp_path / "tfds"
  bsds500.Builder(data_dir=str(data_dir)).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  sample = shared_data / "bsds500_bench"
  gt_folder = tmp_path / "gt"
  gt_folder.mkdir()
  for image_id in ("2018", "3063"):
    shutil.copy(sample / "groundTruth" / f"{image_id}.mat", gt_folder)
  common = ["--predictions", str(sample / "segs"), "--thresholds", "3", "--workers", "1", "--quiet"]
  assert evaluate.main(common + ["--ground-truth", "tfds:bsds500/test", "--tfds-data-dir", str(data_dir),
                                 "--output", str(tmp_path / "a")]) == 0
  assert evaluate.main(common + ["--ground-truth", str(gt_folder), "--output", str(tmp_path / "b")]) == 0
  for name in ("eval_bdry.txt", "eval_bdry_img.txt", "eval_cover.txt", "eval_RI_VOI_thr.txt"):
    assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text(), name


def test_missing_layout_is_named(tmp_path):
  from tfds_builders.bsds500 import bsds500_dataset_builder as b  # pylint: disable=g-import-not-at-top
  with pytest.raises(FileNotFoundError, match="BSR/BSDS500/data"):
    b.find_data_root(tmp_path)
  root = tmp_path / "BSDS500" / "data"
  (root / "images" / "test").mkdir(parents=True)
  (root / "groundTruth" / "test").mkdir(parents=True)
  (root / "images" / "test" / "1.jpg").write_bytes(b"")
  assert b.find_data_root(tmp_path) == root
  with pytest.raises(FileNotFoundError, match="1.mat"):
    b.split_files(root, "test")
  with pytest.raises(FileNotFoundError, match="train"):
    b.split_files(root, "train")
