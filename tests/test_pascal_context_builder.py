"""TFDS `pascal_context` builder on a fixture written in the releases' own formats.

PASCAL-Context: trainval/<id>.mat written by scipy.io.savemat in MATLAB v5 format (the
release's) holding LabelMap as a uint16 (H, W) array, labels.txt of "<id>: <name>" lines.
VOC2010: JPEGImages/<id>.jpg, ImageSets/Main/{train,val}.txt.
"""
import numpy as np
import pytest
from PIL import Image
from scipy import io as sio

HEIGHT, WIDTH = 6, 8
TRAIN, VAL = ["2008_000002", "2008_000003"], ["2008_000007"]
NAMES = ["accordion", "aeroplane", "air conditioner", "antenna", "artillery"]  # ids 1-5


def _label_map(seed):
  """Blocks of classes, with one class in two separate places and an unlabelled corner."""
  labels = np.zeros((HEIGHT, WIDTH), np.uint16)
  labels[:, :3] = 2
  labels[:, 3:6] = 5
  labels[:, 6:] = 2            # class 2 again, not touching the first block: two regions
  labels[0, 0] = 0             # unlabelled pixel
  labels[4:, 4] = 1 + seed % 3
  return labels


@pytest.fixture(name="release")
def fixture_release(tmp_path):
  manual = tmp_path / "manual"
  voc = manual / "VOCdevkit" / "VOC2010"
  (manual / "trainval").mkdir(parents=True)
  (voc / "JPEGImages").mkdir(parents=True)
  (voc / "ImageSets" / "Main").mkdir(parents=True)
  (manual / "labels.txt").write_text(
      "".join(f"{k}: {name}\n" for k, name in enumerate(NAMES, start=1)))
  truths = {}
  for seed, image_id in enumerate(TRAIN + VAL):
    truths[image_id] = _label_map(seed)
    sio.savemat(manual / "trainval" / f"{image_id}.mat", {"LabelMap": truths[image_id]},
                format="5")
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)).save(
        voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
  (voc / "ImageSets" / "Main" / "train.txt").write_text("\n".join(TRAIN) + "\n")
  (voc / "ImageSets" / "Main" / "val.txt").write_text("\n".join(VAL) + "\n")
  return manual, truths


def test_fixture_reads_back_like_the_release(release):
  manual, truths = release
  content = sio.loadmat(manual / "trainval" / "2008_000002.mat")
  assert content["LabelMap"].dtype == np.uint16
  assert b"MATLAB 5.0 MAT-file" in (manual / "trainval" / "2008_000002.mat").read_bytes()[:20]
  np.testing.assert_array_equal(content["LabelMap"], truths["2008_000002"])


def test_connected_regions_by_hand():
  from tfds_builders.pascal_context import release_files  # pylint: disable=g-import-not-at-top
  labels = np.array([[0, 2, 2, 7],
                     [5, 5, 2, 7],
                     [2, 5, 7, 7]])
  # 2 at top (3 px), 7 on the right, 5 in the middle, 2 alone at the bottom-left (touching
  # the top 2 only diagonally: another region under 4-connectivity); 0 is no region.
  np.testing.assert_array_equal(release_files.connected_regions(labels),
                                [[0, 1, 1, 2], [3, 3, 1, 2], [4, 3, 2, 2]])


def test_builds_train_and_val_with_semantic_and_region_truths(release, tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import tfds_builders  # pylint: disable=g-import-not-at-top
  from scipy import ndimage  # pylint: disable=g-import-not-at-top

  manual, truths = release
  data_dir = str(tmp_path / "tfds")
  builder = tfds_builders.BUILDERS["pascal_context"](data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  assert builder.info.file_format.value == "array_record"
  for split, ids in (("train", TRAIN), ("val", VAL)):
    source = tfds.data_source("pascal_context", split=split, data_dir=data_dir, download=False)
    records = {r["image/id"].decode() if isinstance(r["image/id"], bytes) else r["image/id"]: r
               for r in (source[k] for k in range(len(source)))}
    assert sorted(records) == sorted(ids), split
    for image_id, record in records.items():
      truth = truths[image_id].astype(np.int32)
      np.testing.assert_array_equal(record["semantic"], truth)
      regions = record["segmentations"]
      assert regions.shape == (1, HEIGHT, WIDTH) and regions.dtype == np.int32
      regions = regions[0]
      np.testing.assert_array_equal(regions == 0, truth == 0)
      # each region is one 4-connected piece of one class, and one class piece is one region
      for r in np.unique(regions[regions > 0]):
        assert np.unique(truth[regions == r]).size == 1
        assert ndimage.label(regions == r)[1] == 1
      for c in np.unique(truth[truth > 0]):
        assert ndimage.label(truth == c)[1] == np.unique(regions[truth == c]).size
      assert np.unique(regions[regions > 0]).size >= 4  # class 2 gives two regions
      with Image.open(manual / "VOCdevkit/VOC2010/JPEGImages" / f"{image_id}.jpg") as jpeg:
        np.testing.assert_array_equal(record["image"], np.asarray(jpeg))


def test_bad_release_files_are_named(release, tmp_path):
  from tfds_builders.pascal_context import release_files  # pylint: disable=g-import-not-at-top
  from tfds_builders.pascal_context import (  # pylint: disable=g-import-not-at-top
      pascal_context_dataset_builder as b)

  manual, _ = release
  with pytest.raises(FileNotFoundError, match=r"trainval.*trainval.tar.gz"):
    release_files.find_releases(tmp_path / "empty")
  bad_labels = tmp_path / "labels.txt"
  bad_labels.write_text("1: accordion\naeroplane\n")
  with pytest.raises(ValueError, match=r"labels.txt:2: expected '<id>: <name>'"):
    release_files.read_class_names(bad_labels)
  other = tmp_path / "other.mat"
  sio.savemat(other, {"GTcls": np.zeros((2, 2), np.uint16)})
  with pytest.raises(ValueError, match=r"other.mat: no variable 'LabelMap' \(has \['GTcls'\]\)"):
    release_files.read_label_map(other, max_class=5)
  high = tmp_path / "high.mat"
  sio.savemat(high, {"LabelMap": np.full((2, 2), 9, np.uint16)})
  with pytest.raises(ValueError, match=r"high.mat: LabelMap values must be in \[0, 5\]"):
    release_files.read_label_map(high, max_class=5)
  releases = release_files.find_releases(manual)
  sio.savemat(manual / "trainval" / "2008_000003.mat", {"LabelMap": np.ones((3, 3), np.uint16)})
  with pytest.raises(ValueError, match=r"2008_000003.mat: LabelMap is \(3, 3\).*\(6, 8\)"):
    b.read_example(releases, "2008_000003", 5)
