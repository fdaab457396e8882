"""TFDS `voc2012_sbd` builder on fixtures written in the releases' own formats.

VOC: JPEGs, SegmentationClass palette PNGs (PIL 'P' mode with the VOC colour map),
ImageSets/Segmentation lists. SBD: cls/<id>.mat holding the MATLAB struct GTcls with
Boundaries (20x1 cell of sparse matrices), Segmentation and CategoriesPresent, as
written by MATLAB and read back by scipy.io.loadmat; img/<id>.jpg; train/val lists.
"""
import numpy as np
import pytest
from PIL import Image
from scipy import io as sio
from scipy import sparse

HEIGHT, WIDTH = 7, 9
VOC_TRAIN, VOC_VAL = ["2007_000032", "2007_000039"], ["2007_000033"]
SBD_TRAIN, SBD_VAL = ["2007_000039", "2008_000002", "2007_000033"], ["2008_000003"]


def _voc_palette():
  """The VOC colour map (bits of the class index spread over R, G, B, high bits first)."""
  palette = []
  for index in range(256):
    r = g = b = 0
    c = index
    for shift in range(7, -1, -1):
      r |= (c & 1) << shift
      g |= ((c >> 1) & 1) << shift
      b |= ((c >> 2) & 1) << shift
      c >>= 3
    palette += [r, g, b]
  return palette


def _label(seed, *, void):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 21, (HEIGHT, WIDTH)).astype(np.uint8)
  if void:
    labels[0, :] = 255
  return labels


def _write_jpeg(path, seed):
  path.parent.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  Image.fromarray((rng.random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)).save(path, quality=90)


def _write_voc_png(path, labels):
  path.parent.mkdir(parents=True, exist_ok=True)
  image = Image.fromarray(labels, mode="P")
  image.putpalette(_voc_palette())
  image.save(path)


def _write_sbd_mat(path, labels):
  path.parent.mkdir(parents=True, exist_ok=True)
  boundaries = np.empty((20, 1), dtype=object)
  for k in range(20):
    boundaries[k, 0] = sparse.csc_matrix((labels == k + 1).astype(np.float64))
  present = np.unique(labels[(labels > 0) & (labels < 255)]).astype(np.uint8)[:, None]
  sio.savemat(path, {"GTcls": {"Boundaries": boundaries, "Segmentation": labels,
                               "CategoriesPresent": present}})


@pytest.fixture(name="release")
def fixture_release(tmp_path):
  """manual_dir with both releases; returns (manual_dir, {id: voc labels}, {id: sbd labels})."""
  manual = tmp_path / "manual"
  voc = manual / "VOCdevkit" / "VOC2012"
  sbd = manual / "benchmark_RELEASE" / "dataset"
  voc_labels, sbd_labels = {}, {}
  all_ids = sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL))
  for seed, image_id in enumerate(all_ids):
    if image_id != "2008_000003":  # only in SBD's img/: the builder must fall back to it
      _write_jpeg(voc / "JPEGImages" / f"{image_id}.jpg", seed)
    _write_jpeg(sbd / "img" / f"{image_id}.jpg", seed)
    if image_id in VOC_TRAIN + VOC_VAL:
      voc_labels[image_id] = _label(seed, void=True)
      _write_voc_png(voc / "SegmentationClass" / f"{image_id}.png", voc_labels[image_id])
    if image_id in SBD_TRAIN + SBD_VAL:
      sbd_labels[image_id] = _label(100 + seed, void=False)
      _write_sbd_mat(sbd / "cls" / f"{image_id}.mat", sbd_labels[image_id])
  sets = voc / "ImageSets" / "Segmentation"
  sets.mkdir(parents=True)
  (sets / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
  (sets / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
  (sbd / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
  (sbd / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
  return manual, voc_labels, sbd_labels


def test_fixture_formats_read_back_like_the_releases(release):
  manual, voc_labels, sbd_labels = release
  with Image.open(manual / "VOCdevkit/VOC2012/SegmentationClass/2007_000032.png") as png:
    assert png.mode == "P" and png.getpalette()[3:6] == [128, 0, 0]  # class 1 (aeroplane)
  gt = sio.loadmat(str(manual / "benchmark_RELEASE/dataset/cls/2008_000002.mat"))["GTcls"][0, 0]
  assert gt.dtype.names == ("Boundaries", "Segmentation", "CategoriesPresent")
  assert gt["Boundaries"].shape == (20, 1) and sparse.issparse(gt["Boundaries"][0, 0])
  np.testing.assert_array_equal(gt["Segmentation"], sbd_labels["2008_000002"])


def test_builds_splits_with_the_train_aug_rule(release, tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tfds_builders import voc2012_sbd  # pylint: disable=g-import-not-at-top

  manual, voc_labels, sbd_labels = release
  data_dir = str(tmp_path / "tfds")
  builder = voc2012_sbd.Builder(data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  assert builder.info.file_format.value == "array_record"
  # train_aug = (SBD train + SBD val + VOC train) - VOC val: 2007_000033 (VOC val) is excluded
  # although SBD lists it.
  expected = {"train": {"2007_000032": "voc", "2007_000039": "voc"},
              "val": {"2007_000033": "voc"},
              "train_aug": {"2007_000032": "voc", "2007_000039": "voc", "2008_000002": "sbd",
                            "2008_000003": "sbd"}}
  for split, sources in expected.items():
    source = tfds.data_source("voc2012_sbd", split=split, data_dir=data_dir, download=False)
    records = [source[k] for k in range(len(source))]
    ids = [r["image/id"].decode() if isinstance(r["image/id"], bytes) else r["image/id"]
           for r in records]
    assert sorted(ids) == sorted(sources), split  # TFDS stores records in key-hash order
    for image_id, record in zip(ids, records):
      label_source = record["label_source"]
      label_source = label_source.decode() if isinstance(label_source, bytes) else label_source
      assert label_source == sources[image_id]
      truth = (voc_labels if label_source == "voc" else sbd_labels)[image_id]
      assert record["segmentation"].dtype == np.int32
      np.testing.assert_array_equal(record["segmentation"], truth)
      folder = ("benchmark_RELEASE/dataset/img" if image_id == "2008_000003"
                else "VOCdevkit/VOC2012/JPEGImages")
      with Image.open(manual / folder / f"{image_id}.jpg") as jpeg:
        np.testing.assert_array_equal(record["image"], np.asarray(jpeg))


def test_registered_as_local_builder():
  from jhseg.data import sources  # pylint: disable=g-import-not-at-top
  assert sources.LOCAL_BUILDERS["voc2012_sbd"] == "tfds_builders.voc2012_sbd"


def test_bad_release_files_are_named(release, tmp_path):
  from tfds_builders.voc2012_sbd import release_files  # pylint: disable=g-import-not-at-top

  manual, _, _ = release
  with pytest.raises(FileNotFoundError, match="VOC2012/JPEGImages.*VOCtrainval_11-May-2012.tar"):
    release_files.find_releases(tmp_path / "empty")
  rgb = tmp_path / "rgb.png"
  Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(rgb)
  with pytest.raises(ValueError, match=r"rgb.png.*'P'"):
    release_files.read_voc_label(rgb)
  bad_mat = tmp_path / "bad.mat"
  sio.savemat(bad_mat, {"GTinst": {"Segmentation": np.zeros((3, 4), np.uint8)}})
  with pytest.raises(ValueError, match=r"bad.mat.*'GTcls'"):
    release_files.read_sbd_label(bad_mat)
  out_of_range = tmp_path / "range.mat"
  sio.savemat(out_of_range, {"GTcls": {"Segmentation": np.full((3, 4), 40, np.uint8)}})
  with pytest.raises(ValueError, match=r"range.mat.*Segmentation.*\[40\]"):
    release_files.read_sbd_label(out_of_range)
  voc_only = tmp_path / "voc_only" / "VOCdevkit" / "VOC2012"
  for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
    (voc_only / folder).mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=r"benchmark_RELEASE/dataset/cls.*benchmark.tgz"):
    release_files.find_releases(tmp_path / "voc_only")
  releases = release_files.find_releases(manual)
  with pytest.raises(FileNotFoundError, match="1999_000001"):
    release_files.image_path(releases, "1999_000001")
  from tfds_builders.voc2012_sbd import voc2012_sbd_dataset_builder as b  # pylint: disable=g-import-not-at-top
  _write_voc_png(releases.voc / "SegmentationClass" / "2007_000032.png", np.zeros((3, 3), np.uint8))
  with pytest.raises(ValueError, match=r"2007_000032.png.*\(3, 3\).*\(7, 9\)"):
    b.read_example(releases, "2007_000032", "voc")


def test_truncated_files_fail_naming_them_or_are_skipped(release, tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tfds_builders import bad_files  # pylint: disable=g-import-not-at-top
  from tfds_builders import voc2012_sbd  # pylint: disable=g-import-not-at-top
  from tfds_builders.voc2012_sbd import release_files  # pylint: disable=g-import-not-at-top
  from tfds_builders.voc2012_sbd import voc2012_sbd_dataset_builder as b  # pylint: disable=g-import-not-at-top

  manual, _, _ = release
  releases = release_files.find_releases(manual)
  label = releases.voc / "SegmentationClass" / "2007_000033.png"
  label.write_bytes(label.read_bytes()[:60])  # a VOC val label cut short
  with pytest.raises(bad_files.BadFileError, match=f"{label}: "):
    b.read_example(releases, "2007_000033", "voc")
  jpeg = release_files.image_path(releases, "2008_000002")  # an SBD-labelled image of train_aug
  jpeg.write_bytes(jpeg.read_bytes()[:300])
  with pytest.raises(bad_files.BadFileError, match=f"{jpeg}: OSError"):
    b.read_example(releases, "2008_000002", "sbd")
  config = tfds.download.DownloadConfig(manual_dir=str(manual))
  with pytest.raises(bad_files.BadFileError):  # val is built before train_aug or after: either fails
    voc2012_sbd.Builder(data_dir=str(tmp_path / "fail")).download_and_prepare(download_config=config)
  builder = voc2012_sbd.Builder(data_dir=str(tmp_path / "skip"), bad_files="skip")
  # val's only image is bad: a split cannot be empty, so skipping still fails there, naming it.
  with pytest.raises(bad_files.BadFileError, match="split val: all 1 examples have bad files"):
    builder.download_and_prepare(download_config=config)


def test_split_lists_read_first_words_and_bad_lists_name_the_file(tmp_path):
  from tfds_builders import manual_dir  # pylint: disable=g-import-not-at-top

  lists = tmp_path / "train.txt"
  lists.write_text("2008_000002\n\n  2008_000003 -1\n2008_000007\n")  # Main/<class>_ style too
  assert manual_dir.read_ids(lists) == ("2008_000002", "2008_000003", "2008_000007")
  (tmp_path / "paths.txt").write_text("2008_000002\nJPEGImages/2008_000003.jpg\n")
  with pytest.raises(ValueError, match=r"paths.txt: line 2: expected an image id"):
    manual_dir.read_ids(tmp_path / "paths.txt")
  (tmp_path / "empty.txt").write_text("\n \n")
  with pytest.raises(ValueError, match=r"empty.txt: empty split list"):
    manual_dir.read_ids(tmp_path / "empty.txt")
  with pytest.raises(FileNotFoundError, match=r"val.txt: missing split list"):
    manual_dir.read_ids(tmp_path / "val.txt")
