"""`import tfds_builders` registers every builder; the design card's `tfds build` command from an
empty folder writes array_record; bad files fail naming the file or are skipped and counted.

The builds use three images of the Pascal-Part sample (one split each after the fallback rule:
two train, one val) to stay fast; a truncated JPEG is a real sample JPEG cut short.
"""
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE_IDS = ("2008_000652", "2008_000700", "2008_000726")  # sorted: train, train, val


def test_every_builder_package_is_in_the_table_and_registered():
  import tensorflow_datasets as tfds
  import tfds_builders
  modules = (REPO_ROOT / "tfds_builders").glob("*/*_dataset_builder.py")
  packages = sorted(p.parent.name for p in modules)
  assert sorted(tfds_builders.BUILDERS) == packages
  for name, cls in tfds_builders.BUILDERS.items():
    assert tfds.builder_cls(name) is cls, name
  # jhseg.data imports a builder's module lazily by name: every builder must be reachable.
  from jhseg.data import sources
  assert {name: f"tfds_builders.{name}" for name in tfds_builders.BUILDERS} == \
      sources.LOCAL_BUILDERS


def test_every_builder_defaults_to_array_record_and_honours_file_format(tmp_path):
  import tfds_builders
  for name, cls in tfds_builders.BUILDERS.items():
    assert cls(data_dir=str(tmp_path)).info.file_format.value == "array_record", name
  explicit = tfds_builders.BUILDERS["bsds500"](data_dir=str(tmp_path), file_format="tfrecord")
  assert explicit.info.file_format.value == "tfrecord"


def test_bad_files_policy_is_explicit(monkeypatch):
  from tfds_builders import bad_files
  monkeypatch.delenv(bad_files.ENV_VARIABLE, raising=False)
  assert bad_files.resolve_policy(None) == "fail"
  monkeypatch.setenv(bad_files.ENV_VARIABLE, "skip")
  assert bad_files.resolve_policy(None) == "skip"
  assert bad_files.resolve_policy("fail") == "fail"  # the keyword wins over the variable
  monkeypatch.setenv(bad_files.ENV_VARIABLE, "ignore")
  with pytest.raises(ValueError, match=r"\$JHSEG_BAD_FILES='ignore': expected one of fail, skip"):
    bad_files.resolve_policy(None)


def _manual_dir(shared_data, root: pathlib.Path, *, truncate: str | None = None) -> pathlib.Path:
  sample = shared_data / "pascal_part_sample"
  if not sample.is_dir():
    pytest.skip(f"Pascal-Part sample not found at {sample}")
  for folder in ("Annotations_Part", "JPEGImages"):
    (root / folder).mkdir(parents=True)
  for image_id in SAMPLE_IDS:
    shutil.copy(sample / "Annotations_Part" / f"{image_id}.mat", root / "Annotations_Part")
    jpeg = (sample / "JPEGImages" / f"{image_id}.jpg").read_bytes()
    if image_id == truncate:
      jpeg = jpeg[:len(jpeg) // 2]
    (root / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg)
  return root


def _tfds_build(manual_dir, data_dir, cwd, **env):
  """The design card's command, verbatim, run from `cwd` with this checkout importable."""
  tfds_cli = pathlib.Path(sys.executable).with_name("tfds")
  command = [str(tfds_cli), "build", "ultrametric_pascal_part", "--imports=tfds_builders",
             "--config=hierarchical", f"--manual_dir={manual_dir}", f"--data_dir={data_dir}"]
  environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CUDA_VISIBLE_DEVICES": "",
                 "JAX_PLATFORMS": "cpu", **env}
  environment.pop("XLA_FLAGS", None)
  return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True,
                        timeout=300, check=False)


def test_design_card_command_from_an_empty_folder_writes_array_record(shared_data, tmp_path):
  import tensorflow_datasets as tfds
  import tfds_builders  # noqa: F401  (registers the builder for tfds.data_source below)
  manual = _manual_dir(shared_data, tmp_path / "manual")
  empty = tmp_path / "empty"
  empty.mkdir()
  data_dir = tmp_path / "tfds"
  done = _tfds_build(manual, data_dir, empty)
  assert done.returncode == 0, done.stderr[-3000:]
  assert list(empty.iterdir()) == []
  version_dir = data_dir / "ultrametric_pascal_part/hierarchical/1.0.0"
  written = sorted(p.name for p in version_dir.iterdir())
  # The split each sample image lands in comes from the builder's default (COB's) lists.
  from tfds_builders.ultrametric_pascal_part import splits
  ids = sorted(p.stem for p in (manual / "JPEGImages").glob("*.jpg"))
  expected = splits.make_splits(manual, ids)
  sizes = {name: len(getattr(expected, name)) for name in ("train", "val", "test")}
  assert [n for n in written if ".array_record-" in n] == [
      f"ultrametric_pascal_part-{name}.array_record-00000-of-00001"
      for name in sorted(sizes) if sizes[name]]
  assert not [n for n in written if "tfrecord" in n]
  split = next(name for name in ("train", "val", "test") if sizes[name])
  source = tfds.data_source("ultrametric_pascal_part/hierarchical", split=split,
                            data_dir=str(data_dir), download=False)
  assert len(source) == sizes[split] and source[0]["image"].shape[2] == 3


def test_truncated_jpeg_fails_naming_it_or_is_skipped_with_a_count(shared_data, tmp_path):
  import tensorflow_datasets as tfds
  from tfds_builders import bad_files
  from tfds_builders.ultrametric_pascal_part import Builder
  manual = _manual_dir(shared_data, tmp_path / "manual", truncate="2008_000652")
  config = tfds.download.DownloadConfig(manual_dir=str(manual))
  failing = Builder(data_dir=str(tmp_path / "fail"), bad_files="fail")
  with pytest.raises(bad_files.BadFileError) as error:
    failing.download_and_prepare(download_config=config)
  assert str(error.value).startswith(
      f"{manual / 'JPEGImages' / '2008_000652.jpg'}: OSError: image file is truncated")
  assert "split val, example 2008_000652" in " ".join(getattr(error.value, "__notes__", []))
  builder = Builder(data_dir=str(tmp_path / "skip"), bad_files="skip")
  with pytest.warns(UserWarning) as caught:
    builder.download_and_prepare(download_config=config)
  messages = [str(w.message) for w in caught]
  assert any("split val: skipped 1 example(s) with bad files; first: 2008_000652" in m
             for m in messages), messages
  assert {s: v.num_examples for s, v in builder.info.splits.items()} == {"train": 1, "val": 1}
  # COB's lists: 2008_000652 and 2008_000700 are val images, 2008_000726 a train image.
  ids = [builder.as_data_source(split="val")[0]["image/id"]]
  assert [i.decode() if isinstance(i, bytes) else i for i in ids] == ["2008_000700"]


def test_bsds500_example_with_a_truncated_jpeg_or_mismatched_ground_truth(shared_data, tmp_path):
  from tfds_builders import bad_files
  from tfds_builders.bsds500 import bsds500_dataset_builder as bsds
  sample = shared_data / "bsds500_bench"
  if not sample.is_dir():
    pytest.skip(f"BSDS benchmark sample not found at {sample}")
  good = bsds.read_example("2018", sample / "images/2018.jpg", sample / "groundTruth/2018.mat")
  assert good["segmentations"].shape[1:] in ((321, 481), (481, 321))
  truncated = tmp_path / "2018.jpg"
  truncated.write_bytes((sample / "images/2018.jpg").read_bytes()[:4000])
  with pytest.raises(bad_files.BadFileError,
                     match=f"{truncated}: OSError: image file is truncated"):
    bsds.read_example("2018", truncated, sample / "groundTruth/2018.mat")
  with pytest.raises(bad_files.BadFileError, match="groundTruth is .* but image .*3063.jpg"):
    bsds.read_example("2018", sample / "images/3063.jpg", sample / "groundTruth/2018.mat")
  corrupt_mat = tmp_path / "2018.mat"
  corrupt_mat.write_bytes((sample / "groundTruth/2018.mat").read_bytes()[:300])
  with pytest.raises(bad_files.BadFileError, match=str(corrupt_mat)):
    bsds.read_example("2018", sample / "images/2018.jpg", corrupt_mat)
  png = tmp_path / "png.jpg"  # a PNG named .jpg would be stored as a JPEG feature
  from PIL import Image
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(png, format="PNG")
  with pytest.raises(bad_files.BadFileError, match="expected a JPEG image, got PNG"):
    bad_files.decode_image(png)
