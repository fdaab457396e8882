"""`python -m jhseg.infer` on tiny trained runs: restored weights, outputs per task, errors."""
import json
import re

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from jhseg import grid
from jhseg import hierarchy
from jhseg import infer
from jhseg.tasks import TASKS
from jhseg.tasks.base import Task
from jhseg.train import checkpointing
from jhseg.train.optim import parameter_name

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Tests of the shared ultrametric run: in the xdist worker that trains it (conftest.py).
ULTRAMETRIC_GROUP = pytest.mark.xdist_group("ultrametric_tiny_run")
SIZES = ((40, 56), (33, 47))  # two sizes (one odd) -> two compilations


@pytest.fixture(scope="module")
def ultrametric_run(ultrametric_tiny_run):
  """The shared `ultrametric:tiny` run (conftest.py): checkpoints and the validation loss
  (its best_metric, for --best) at steps 1, 2 and 3."""
  config, workdir, _ = ultrametric_tiny_run
  assert (config.num_train_steps, config.checkpoint_every_steps, config.checkpoint.keep,
          config.checkpoint.best_metric) == (3, 1, 3, "eval/val/loss")
  return workdir


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  """Two PNGs of different sizes: four flat colour blocks plus a little noise."""
  folder = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  paths = []
  for height, width in SIZES:
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[: height // 2, : width // 2] = (220, 40, 40)
    rgb[: height // 2, width // 2:] = (40, 200, 60)
    rgb[height // 2:, : width // 3] = (30, 60, 210)
    rgb[height // 2:, width // 3:] = (240, 230, 80)
    rgb = np.clip(rgb + rng.integers(-10, 10, rgb.shape), 0, 255).astype(np.uint8)
    path = folder / f"scene_{height}x{width}.png"
    Image.fromarray(rgb).save(path)
    paths.append(path)
  return paths


def _infer(workdir, out, paths, *extra) -> int:
  return infer.main([f"--workdir={workdir}", f"--out={out}", *extra, *map(str, paths)])


def _png_size(path):
  assert path.read_bytes()[:8] == PNG_SIGNATURE, path
  with Image.open(path) as image:
    return image.size[::-1]


# ----------------------------------------------------------------------------- restoring


@ULTRAMETRIC_GROUP
def test_restores_the_checkpoint_arrays_of_the_chosen_step(ultrametric_run):
  for step in (1, 3):
    _, model, chosen = infer.restore_model(str(ultrametric_run), step=step)
    assert chosen == step
    saved = checkpointing.read_state_arrays(str(ultrametric_run / "checkpoints" / str(step) /
                                                "state"))
    flat, restored = {}, {}
    jax.tree_util.tree_map_with_path(lambda p, x: flat.__setitem__(parameter_name(p), x), saved)
    jax.tree_util.tree_map_with_path(lambda p, x: restored.__setitem__(parameter_name(p), x),
                                     nnx.state(model, (nnx.Param, nnx.BatchStat)))
    assert len(restored) > 10
    for name, value in restored.items():
      np.testing.assert_array_equal(np.asarray(value), flat["0/" + name], err_msg=name)
  # Two different steps give different weights (the training moved them).
  _, one, _ = infer.restore_model(str(ultrametric_run), step=1)
  _, two, _ = infer.restore_model(str(ultrametric_run))  # latest = 3
  kernel = lambda m: np.asarray(m.encoder.conv1.kernel[...])
  assert not np.array_equal(kernel(one), kernel(two))


@ULTRAMETRIC_GROUP
def test_best_is_the_step_with_the_lowest_eval_loss(ultrametric_run):
  records = [json.loads(line) for line in
             (ultrametric_run / "metrics.jsonl").read_text().splitlines()]
  losses = {r["step"]: r["eval/val/loss"] for r in records if "eval/val/loss" in r}
  assert sorted(losses) == [1, 2, 3]
  config = infer.load_config(str(ultrametric_run))
  step, state_dir = infer.checkpoint_state_dir(str(ultrametric_run), config, best=True)
  assert step == min(losses, key=losses.get)
  assert state_dir.endswith(f"checkpoints/{step}/state")
  assert infer.best_step(str(ultrametric_run), "eval/val/loss", "max", [1, 2, 3]) == max(
      losses, key=losses.get)
  assert infer.best_step(str(ultrametric_run), "eval/val/loss", "min", [2]) == 2  # only saved ones


# ----------------------------------------------------------------------------- tasks


@pytest.mark.xdist_group("hsg_tiny_run")  # the worker that trains `hsg_tiny_run`
def test_hsg_writes_nested_levels_of_the_image_size_and_pictures(hsg_tiny_run, images,
                                                                  tmp_path, capsys):
  # The shared `hsg:tiny` run (conftest.py): one checkpoint, at step 3, with the metrics.
  _, hsg_run, _ = hsg_tiny_run
  assert _infer(hsg_run, tmp_path, images, "--best") == 0  # the HSG config has a best_metric
  assert "at step 3;" in capsys.readouterr().out
  config = infer.load_config(str(hsg_run))
  clusters = list(config.model.num_clusters)
  rows, cols = config.eval.grid
  for path, (height, width) in zip(images, SIZES):
    name = path.stem
    with np.load(tmp_path / f"{name}_levels.npz") as npz:
      assert sorted(npz.files) == [f"G{l}" for l in range(len(clusters) + 1)]
      levels = [npz[f"G{l}"] for l in range(len(clusters) + 1)]
    for level, bound in zip(levels, [rows * cols] + clusters):
      assert level.shape == (height, width) and level.dtype == np.int32
      assert 0 <= level.min() and level.max() < bound
    for fine, coarse in zip(levels, levels[1:]):  # each G_l region inside one G_{l+1} region
      for label in np.unique(fine):
        assert len(np.unique(coarse[fine == label])) == 1, (name, label)
    h, v = hierarchy.ultrametric_from_nested_segmentations(levels)
    assert hierarchy.is_ultrametric(h, v)
    assert _png_size(tmp_path / f"{name}_ucm.png") == (2 * height - 1, 2 * width - 1)
    for kind in ("hierarchy", "attention"):
      _png_size(tmp_path / f"{name}_{kind}.png")


@ULTRAMETRIC_GROUP
def test_ultrametric_writes_an_interpixel_ucm_of_the_image_geometry(ultrametric_run, images,
                                                                    tmp_path):
  assert _infer(ultrametric_run, tmp_path, images) == 0
  for path, (height, width) in zip(images, SIZES):
    name = path.stem
    ucm = np.load(tmp_path / f"{name}_ucm.npy")
    assert ucm.shape == (2 * height - 1, 2 * width - 1) and ucm.dtype == np.float32
    assert np.all(ucm[0::2, 0::2] == 0)                      # pixel positions
    h, v = grid.interpixel_to_edges(ucm)
    h, v = np.asarray(h), np.asarray(v)
    assert 0.0 <= ucm.min() and ucm.max() <= 1.0            # expected levels in [0, 1]
    assert hierarchy.is_ultrametric(h, v)
    np.testing.assert_array_equal(np.asarray(grid.edges_to_interpixel(h, v)), ucm)
    assert _png_size(tmp_path / f"{name}_ucm.png") == (2 * height - 1, 2 * width - 1)
    _png_size(tmp_path / f"{name}_cuts.png")


# ----------------------------------------------------------------------------- failures


@ULTRAMETRIC_GROUP
def test_unreadable_image_is_named_and_skipped(ultrametric_run, images, tmp_path, capsys):
  broken = tmp_path / "broken.jpg"
  broken.write_text("not a JPEG")
  missing = tmp_path / "missing.png"
  out = tmp_path / "out"
  assert _infer(ultrametric_run, out, [broken, images[0], missing]) == 1
  err = capsys.readouterr().err
  assert f"cannot read image {broken}" in err and f"cannot read image {missing}" in err
  assert (out / f"{images[0].stem}_ucm.npy").is_file()      # the good image still ran
  assert not list(out.glob("broken_*")) and not list(out.glob("missing_*"))


@ULTRAMETRIC_GROUP
def test_missing_workdir_or_checkpoint_is_a_clear_error(ultrametric_run, images, tmp_path,
                                                         capsys):
  nowhere = tmp_path / "nowhere"
  assert _infer(nowhere, tmp_path / "out", images[:1]) == 2
  assert f"--workdir {nowhere}: no such directory" in capsys.readouterr().err

  no_config = tmp_path / "no_config"
  no_config.mkdir()
  assert _infer(no_config, tmp_path / "out", images[:1]) == 2
  assert str(no_config / "config.json") in capsys.readouterr().err

  fresh = tmp_path / "fresh"  # a run that wrote its config but no checkpoint yet
  fresh.mkdir()
  config = json.loads((ultrametric_run / "config.json").read_text())
  del config["checkpoint"]["best_metric"]
  (fresh / "config.json").write_text(json.dumps(config))
  assert _infer(fresh, tmp_path / "out", images[:1]) == 2
  assert f"no checkpoint directory at {fresh / 'checkpoints'}" in capsys.readouterr().err
  (fresh / "checkpoints").mkdir()
  assert _infer(fresh, tmp_path / "out", images[:1]) == 2
  assert f"no checkpoint in {fresh / 'checkpoints'}" in capsys.readouterr().err
  assert _infer(fresh, tmp_path / "out", images[:1], "--best") == 2
  assert "--best: the run has no config.checkpoint.best_metric" in capsys.readouterr().err

  assert _infer(ultrametric_run, tmp_path / "out", images[:1], "--step=7") == 2
  assert "--step=7: no such checkpoint" in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


def test_tasks_without_inference_name_themselves_and_the_ones_that_have_it():
  task = object.__new__(TASKS["pixel_classification"])
  with_inference = sorted(name for name, cls in TASKS.items() if cls.infer is not Task.infer)
  assert {"cast", "del", "hiposeg", "hsg", "ultrametric"} <= set(with_inference)
  assert "pixel_classification" not in with_inference
  with pytest.raises(NotImplementedError,
                     match=re.escape("'pixel_classification'") + ".*" + re.escape(
                         str(with_inference))):
    task.infer(None, np.zeros((4, 4, 3), np.float32), "", "x")
  assert TASKS["hsg"].infer is not Task.infer


def test_output_names_are_file_stems_made_unique():
  assert infer.output_names(["a/x.png", "b/x.jpg", "c/y.png", "x_2.png"]) == [
      "x", "x_2", "y", "x_2_2"]
