"""Figure-ground on PartImageNet: the authors' centre view (torchvision Resize + CenterCrop,
labels nearest) by hand and against torchvision, and the `partimagenet_figure_ground`
config's evaluator end to end on the builder's two-image release (real format), tiny model."""
import importlib
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from jhseg.tasks import cast_deit
from jhseg.tasks import cast_evals
from jhseg.train import devices, evaluators as evaluators_lib
from jhseg.train.config_fields import check_fields
from tfds_builders.partimagenet import partimagenet_dataset_builder as builder_module

from test_partimagenet import write_release

configs = importlib.import_module("experiments.configs.cast_deit")


def test_center_crop_box_by_hand():
  # 12 x 16 -> shorter side 224: 224 x int(224 * 16 / 12) = 298; left round(74 / 2) = 37.
  assert cast_evals.center_crop_box(12, 16, 224) == (224, 298, 0, 37)
  # 375 x 500 (landscape): 224 x 298 again; 500 x 333 (portrait): int(224 * 500 / 333) = 336.
  assert cast_evals.center_crop_box(375, 500, 224) == (224, 298, 0, 37)
  assert cast_evals.center_crop_box(500, 333, 224) == (336, 224, 56, 0)
  assert cast_evals.center_crop_box(5, 5, 3) == (3, 3, 0, 0)


def _torch_reference(labels, size):
  """torchvision's Resize(size, NEAREST) + CenterCrop(size) on a tensor, transcribed:
  F.interpolate(mode="nearest") to (short = size, long = int(size * long / short)), then the
  crop at round((new - size) / 2)."""
  import torch  # pylint: disable=g-import-not-at-top
  h, w = labels.shape
  new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
  resized = torch.nn.functional.interpolate(
      torch.from_numpy(labels.astype(np.float32))[None, None], size=(new_h, new_w),
      mode="nearest")[0, 0].numpy()
  top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
  return resized[top:top + size, left:left + size].astype(labels.dtype)


def test_center_crop_labels_match_torch_nearest():
  pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  for shape in ((37, 50), (61, 29), (20, 20), (12, 16)):
    labels = rng.integers(0, 12, shape).astype(np.uint8)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    got = cast_evals.center_crop_example({"image": image, "object_class": labels, "label": 3,
                                          "part_class": labels}, size=24,
                                         label_field="object_class")
    np.testing.assert_array_equal(got["object_class"], _torch_reference(labels, 24))
    assert got["image"].shape == (24, 24, 3) and got["image"].dtype == np.uint8
    assert set(got) == {"image", "object_class", "label"}
  with pytest.raises(ValueError, match="label_field='parts'"):
    cast_evals.center_crop_example({"image": image}, size=8, label_field="parts")


@pytest.fixture(scope="module")
def partimagenet_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("partimagenet")
  manual = write_release(root / "manual")
  builder = builder_module.Builder(data_dir=str(root / "data"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual)))
  return str(root / "data")


def test_config_variant_evaluates_figure_ground_on_partimagenet(partimagenet_dir, tmp_path):
  config = configs.get_config("partimagenet_figure_ground")
  check_fields(config)
  for name in ("figure_ground", "figure_ground_dogs"):
    spec = config.evals[name]
    assert (spec.dataset, spec.split, spec.method) == ("partimagenet", "val", "figure_ground")
    spec.data_dir, spec.batch_size = partimagenet_dir, 4  # the fixture's copy; 4 devices
  assert config.eval.label_field == "object_class" and config.eval.center_crop == 224
  dogs = config.evals.figure_ground_dogs.options.image_classes
  assert (min(dogs), max(dogs), len(dogs)) == (151, 268, 118)
  synsets = builder_module.imagenet_synsets()
  assert (synsets[151], synsets[268]) == ("n02085620", "n02113978")  # Chihuahua .. hairless
  # The fixture's val image is a heron (n02009229): select it by its class.
  heron = synsets.index("n02009229")
  config.evals.figure_ground.options.image_classes = (heron, 999)
  # A tiny model.
  config.model.dim, config.model.num_heads = 16, 2
  config.model.depths, config.model.num_clusters = (1,), (3,)
  config.model.num_classes = 5
  del config.evals.classification  # the imagenet variant's; not built here
  task = cast_deit.CASTDeiT(config)
  evaluators = {e.name: e for e in evaluators_lib.parse_evaluators(config)}
  evaluators_lib.check_first_example(
      evaluators["figure_ground"],
      evaluators_lib.evaluation_of(task, evaluators["figure_ground"]).transforms())
  model = task.make_model(nnx.Rngs(0))
  model.eval()
  mesh = devices.make_data_mesh()
  scalars = evaluators_lib.run_evaluator(task, model, evaluators["figure_ground"], step=1,
                                         total_steps=1, workdir=str(tmp_path), mesh=mesh)
  # The val image (12 x 16) has one part, rows 4-9 x columns 13-14 (test_partimagenet). In
  # the 224^2 view (224 x 298, left 37) output row i reads floor(i * 12 / 224), column j
  # floor((37 + j) * 16 / 298): rows 75-186 (112) and columns 206-223 (18) are foreground.
  assert scalars["eval/figure_ground/num_images"] == 1.0
  assert scalars["eval/figure_ground/jaccard_all_foreground"] == pytest.approx(
      112 * 18 / 224**2)
  for name in ("best_head", "mean_attention"):
    assert 0.0 <= scalars[f"eval/figure_ground/jaccard_{name}"] <= 1.0
  summary = json.loads((tmp_path / "eval" / "figure_ground" / "1" / "summary.json")
                       .read_text())
  assert summary["scalars"]["num_images"] == 1.0
  assert (tmp_path / "eval" / "figure_ground" / "1" / "0_figure_ground.png").exists()
  # No dog in the fixture: the dogs evaluator scores no image.
  dogs = evaluators_lib.run_evaluator(task, model, evaluators["figure_ground_dogs"], step=1,
                                      total_steps=1, workdir=str(tmp_path), mesh=mesh)
  assert dogs == {"eval/figure_ground_dogs/num_images": 0.0}


def test_without_center_crop_the_moco_view_is_unchanged():
  config = configs.get_config("tiny")
  config.model.dim, config.model.num_heads = 16, 2
  task = cast_deit.CASTDeiT(config)
  assert config.eval.center_crop is None
  moco = super(cast_deit.CASTDeiT, task).label_map_transforms(required=False)
  assert len(task.label_map_transforms(required=False)) == len(moco)
