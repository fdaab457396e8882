"""The accelerator-scale CAST MoCo configs follow Table 11 and the centre-view k-NN input."""
import importlib

import numpy as np
import pytest

from jhseg.tasks import cast as cast_task
from jhseg.train.config_fields import check_fields

cast_configs = importlib.import_module("experiments.configs.cast")


@pytest.mark.parametrize("variant, images, epochs, warmup", [
    ("imagenet", 1_281_167, 100, 10),   # Table 11, IN-1K column
    ("imagenet100", 127_000, 200, 20),  # Table 11, IN-100 column (appendix E.2's 127K)
    ("coco", 118_287, 400, 40),         # Table 11, COCO column (train2017)
])
def test_table11_schedules(variant, images, epochs, warmup):
  config = cast_configs.get_config(variant)
  check_fields(config)
  steps_per_epoch = images // 256
  assert config.data.batch_size == 256
  assert config.num_train_steps == epochs * steps_per_epoch
  assert config.optim.warmup_steps == warmup * steps_per_epoch
  assert config.optim.learning_rate == pytest.approx(1.5e-4)
  assert config.optim.weight_decay == 0.1
  assert config.model.moco.temperature == 0.2 and config.model.moco.mlp_dim == 4096
  assert config.model.size == "cast_small"


@pytest.mark.parametrize("variant, batch, lr, classes", [("imagenet", 1024, 30.0, 1000),
                                                          ("imagenet100", 256, 0.8, 100)])
def test_imagenet_probes_are_the_papers_recipes(variant, batch, lr, classes):
  config = cast_configs.get_config(variant)
  probe = config.evals.linear_probe.options
  assert (probe.batch_size, probe.base_learning_rate, probe.epochs) == (batch, lr, 90)
  assert probe.num_classes == classes and config.eval.center_crop == 224


def test_coco_retrieves_voc_segments():
  config = cast_configs.get_config("coco")
  spec = config.evals.retrieval
  assert (spec.dataset, spec.split, spec.options.memory_split) == ("voc2012_sbd", "val",
                                                                   "train_aug")
  assert config.eval.label_field == "segmentation" and spec.options.num_classes == 21


def test_center_crop_knn_view_is_fixed_size_whatever_the_image():
  config = cast_configs.get_config("tiny")
  config.eval.center_crop, config.eval.center_crop_ratio = 32, 0.875
  config.eval.scale, config.eval.image_size, config.eval.original_size = 1.0, (32, 32), (32, 32)
  crop, with_label = cast_task.CASTMoCo(config).knn_transforms()
  rng = np.random.default_rng(0)
  for shape in [(50, 90), (120, 40), (32, 32)]:
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    view = crop({"image": image, "label": np.int64(3)})
    # Shorter side to int(32 / 0.875) = 36, then the centre 32 x 32.
    assert view["image"].shape == (32, 32, 3) and view["image"].dtype == np.uint8
    out = with_label(view)
    assert out["image"].shape == (32, 32, 3) and out["image"].dtype == np.float32
    assert out["superpixels"].shape == (32, 32)
    n = int(out["segment_mask"].sum())
    # Every pixel is in one of the valid superpixels.
    assert n > 1 and set(np.unique(out["superpixels"])) == set(range(n))
    assert out["label"] == 3
  with pytest.raises(ValueError, match="label"):
    with_label(crop({"image": rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)}))


def test_center_crop_box_with_a_larger_short_side_by_hand():
  from jhseg.tasks import cast_evals  # pylint: disable=g-import-not-at-top
  # 50 x 90, shorter side to 36: 36 x int(64.8) = 36 x 64, centre 32 x 32 at (2, 16).
  assert cast_evals.center_crop_box(50, 90, 32, short_side=36) == (36, 64, 2, 16)
  assert cast_evals.center_crop_box(90, 50, 32, short_side=36) == (64, 36, 16, 2)


def test_partimagenet_tta_is_appendix_b():
  config = cast_configs.get_config("partimagenet_tta")
  check_fields(config)
  tta = config.evals.tta
  assert config.model.size == "cast_base" and config.data.name == "imagenet2012"  # Table 10
  assert (tta.method, tta.dataset, tta.split, tta.options.train_split) == (
      "tta", "partimagenet", "val", "train")
  dogs = tta.options.positive_classes
  assert (min(dogs), max(dogs), len(dogs), tta.options.num_classes) == (151, 268, 118, 2)
  assert (config.eval.center_crop, config.eval.center_crop_ratio) == (224, 1.0)
  assert config.eval.label_field == "object_class"
