"""`python -m jhseg.infer`: a trained run's predictions on any image files.

    python -m jhseg.infer --workdir=RUN_DIR [--step=N | --best] --out=OUT_DIR a.jpg b.png ...

The task and model are rebuilt from `RUN_DIR/config.json` (written by
`jhseg.train.train_and_evaluate`), and the model's parameters and BatchNorm
statistics are read from one checkpoint under `RUN_DIR/checkpoints` -- the latest,
`--step`, or with `--best` the saved step with the best `config.checkpoint.best_metric`
in the run's metrics.jsonl -- as plain arrays (`checkpointing.load_params_from`), so
the optimizer state is not needed and any device topology can read a run written by
another. A torchvision `config.model.pretrained` file is not read: the checkpoint
holds every weight.

Each image is read with PIL as RGB, scaled to [0, 1] by its mode's range (8-bit modes
/ 255, 16-bit grey / 65535; see `read_image`) and predicted at its own size
by the task's `Task.infer` (HSG: the nested levels, hierarchy, UCM and attention
pictures; Ultrametric U-Net: the predicted UCM array and pictures), which writes
`OUT_DIR/<name>_*` files, `<name>` being the image's file name without extension
(`_2`, `_3`, ... appended when two inputs share one). The jitted inference compiles
once per distinct image size: resize or crop a large collection to a few sizes to
avoid recompiling. A file that cannot be read or predicted is reported and skipped;
the exit code is 1 if any image failed, 2 if the run cannot be loaded, else 0.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

import ml_collections
import numpy as np

CONFIG_FILE = "config.json"


class RunError(Exception):
  """The run directory cannot give a model (missing files, unknown step, mismatch)."""


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's configuration from `workdir/config.json`."""
  if not os.path.isdir(workdir):
    raise RunError(f"--workdir {workdir}: no such directory")
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise RunError(f"--workdir {workdir}: no {CONFIG_FILE} (written by "
                   f"jhseg.train.train_and_evaluate at the start of a run) at {path}")
  try:
    with open(path) as f:
      fields = json.load(f)
  except (OSError, json.JSONDecodeError) as err:
    raise RunError(f"{path}: not a readable JSON config ({err})") from None
  if not isinstance(fields, dict) or "task" not in fields or "model" not in fields:
    raise RunError(f"{path}: expected a run config with fields 'task' and 'model'")
  return ml_collections.ConfigDict(fields)


def best_step(workdir: str, metric: str, mode: str, steps: Sequence[int]) -> int:
  """The saved step whose evaluation has the best `metric` in `workdir/metrics.jsonl`.

  Read from the run's metric log rather than from orbax's checkpoint metrics, which
  the engine's checkpoints do not record (no `best_fn` in their manager options).
  A step evaluated twice (a resumed run) counts with its last record.
  """
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    raise RunError(f"--best: no metric log at {path}")
  values = {}
  with open(path) as f:
    for number, line in enumerate(f, start=1):
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        raise RunError(f"--best: {path} line {number} is not JSON") from None
      if record.get(metric) is not None and record.get("step") in steps:
        values[record["step"]] = float(record[metric])
  if not values:
    raise RunError(f"--best: no saved checkpoint (steps {list(steps)}) has the metric "
                   f"{metric!r} (config.checkpoint.best_metric) in {path}")
  if mode not in ("min", "max"):
    raise RunError(f"--best: config.checkpoint.best_mode={mode!r}; expected 'min' or 'max'")
  pick = min if mode == "min" else max
  return pick(values, key=lambda step: (values[step], -step))


def checkpoint_state_dir(workdir: str, config: ml_collections.ConfigDict, *,
                         step: int | None = None, best: bool = False) -> tuple[int, str]:
  """(step, `checkpoints/<step>/state` folder) of the latest, given or best checkpoint."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    raise RunError(f"--workdir {workdir}: no checkpoint directory at {directory}")
  checkpoint = config.get("checkpoint") or ml_collections.ConfigDict()
  if best and not checkpoint.get("best_metric"):
    raise RunError(f"--best: the run has no config.checkpoint.best_metric (see "
                   f"{os.path.join(workdir, CONFIG_FILE)}); give --step=N or omit both")
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False),
      item_names=("state", "meta"))
  steps = sorted(manager.all_steps())
  if not steps:
    raise RunError(f"--workdir {workdir}: no checkpoint in {directory}")
  if best:
    chosen = best_step(workdir, checkpoint.best_metric, checkpoint.get("best_mode", "min"),
                       steps)
  elif step is not None:
    if step not in steps:
      raise RunError(f"--step={step}: no such checkpoint in {directory}; saved steps: {steps}")
    chosen = step
  else:
    chosen = steps[-1]
  state_dir = os.path.join(directory, str(chosen), "state")
  if not os.path.isdir(state_dir):
    raise RunError(f"checkpoint {chosen}: no state folder at {state_dir}")
  return chosen, state_dir


def restore_model(workdir: str, *, step: int | None = None, best: bool = False):
  """(task, model in evaluation mode, step) of the run in `workdir`."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from jhseg.tasks import get_task  # pylint: disable=g-import-not-at-top
  from jhseg.train import checkpointing  # pylint: disable=g-import-not-at-top

  workdir = os.path.abspath(workdir)
  config = load_config(workdir)
  chosen, state_dir = checkpoint_state_dir(workdir, config, step=step, best=best)
  if config.model.get("pretrained"):
    config.model.pretrained = ""  # every weight comes from the checkpoint
  try:
    task = get_task(config.task)(config)
  except ValueError as err:
    raise RunError(f"{os.path.join(workdir, CONFIG_FILE)}: {err}") from None
  model = task.make_model(nnx.Rngs(config.get("seed", 0)))
  weights = nnx.state(model, (nnx.Param, nnx.BatchStat))
  try:
    loaded, missing = checkpointing.load_params_from(state_dir, weights)
  except ValueError as err:
    raise RunError(f"checkpoint {state_dir} does not fit the model of {CONFIG_FILE}: "
                   f"{err}") from None
  if missing:
    raise RunError(f"checkpoint {state_dir} lacks {len(missing)} arrays of the model built from "
                   f"{CONFIG_FILE}, e.g. {missing[:5]}")
  nnx.update(model, loaded)
  # Every array committed to one device: otherwise the uncommitted ones (RNG streams of
  # dropout layers) come back committed from the first jitted call, and the second
  # call compiles again.
  nnx.update(model, jax.device_put(nnx.state(model), jax.devices()[0]))
  model.eval()
  return task, model, chosen


# PIL modes of 8 bits per channel: PIL's own conversion to RGB is exact for them (palette
# looked up, alpha dropped, grey replicated, CMYK as 255 - C - K clipped).
_EIGHT_BIT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK",
                    "YCbCr", "LAB", "HSV")
# 16-bit grey (PNG, TIFF): PIL's convert("RGB") clips these at 255 (black and white), so they
# are scaled by 65535 here.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _rgb_in_unit_range(image, path: str) -> np.ndarray:
  """(H, W, 3) float32 in [0, 1] of an opened PIL image of any supported mode."""
  mode = image.mode
  if mode in _EIGHT_BIT_MODES:
    return np.asarray(image.convert("RGB")).astype(np.float32) / 255.0
  if mode in _SIXTEEN_BIT_MODES or mode == "I":
    grey = np.asarray(image).astype(np.float64)
    if mode == "I" and grey.size and (grey.min() < 0 or grey.max() > 65535):
      raise ValueError(f"image {path}: 32-bit integer (mode 'I') values in [{grey.min():g}, "
                       f"{grey.max():g}]; expected 16-bit values in [0, 65535]")
    grey = grey / 65535.0
  elif mode == "F":
    grey = np.asarray(image).astype(np.float64)
    if not np.isfinite(grey).all() or (grey.size and (grey.min() < 0 or grey.max() > 1)):
      raise ValueError(f"image {path}: floating-point (mode 'F') values must be finite and in "
                       f"[0, 1]; got [{np.nanmin(grey):g}, {np.nanmax(grey):g}] "
                       f"{'with NaN/inf' if not np.isfinite(grey).all() else ''}".rstrip())
  else:
    raise ValueError(f"image {path}: unsupported PIL mode {mode!r}; supported: "
                     f"{', '.join(_EIGHT_BIT_MODES + _SIXTEEN_BIT_MODES + ('I', 'F'))}")
  return np.repeat(grey.astype(np.float32)[..., None], 3, axis=-1)


def read_image(path: str) -> np.ndarray:
  """(H, W, 3) float32 RGB in [0, 1]; ValueError naming the file if it cannot be read.

  Scaled by the range of the file's mode: 8-bit modes (L, P, RGB, RGBA, LA, CMYK, 1, ...)
  through PIL's RGB conversion / 255, alpha dropped; 16-bit grey (I;16*) and 32-bit integer
  grey (I, values in [0, 65535]) / 65535; float grey (F) as is, if in [0, 1].
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  try:
    with Image.open(path) as image:
      rgb = _rgb_in_unit_range(image, path)
  except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as err:
    if isinstance(err, ValueError) and str(err).startswith(f"image {path}: "):
      raise  # the mode checks above, which name the file
    raise ValueError(f"cannot read image {path}: {err}") from None
  if min(rgb.shape[:2]) < 2:
    raise ValueError(f"image {path} is {rgb.shape[0]}x{rgb.shape[1]}; need at least 2x2 pixels")
  return rgb


def output_names(paths: Sequence[str]) -> list[str]:
  """File names without extension, made unique by `_2`, `_3`, ... suffixes."""
  names, used = [], set()
  for path in paths:
    stem = os.path.splitext(os.path.basename(path))[0] or "image"
    name, k = stem, 1
    while name in used:
      k += 1
      name = f"{stem}_{k}"
    used.add(name)
    names.append(name)
  return names


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m jhseg.infer",
      description="Predictions of a trained jhseg run on image files (see Task.infer).")
  parser.add_argument("--workdir", required=True,
                      help="run directory of jhseg.train (config.json and checkpoints/)")
  which = parser.add_mutually_exclusive_group()
  which.add_argument("--step", type=int, default=None,
                     help="checkpoint step (default: the latest)")
  which.add_argument("--best", action="store_true",
                     help="the saved step with the best config.checkpoint.best_metric "
                          "in the run's metrics.jsonl")
  parser.add_argument("--out", required=True, help="output directory (created)")
  parser.add_argument("images", nargs="+", help="image files PIL can read (JPEG, PNG, ...)")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    task, model, step = restore_model(args.workdir, step=args.step, best=args.best)
  except RunError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  os.makedirs(args.out, exist_ok=True)
  print(f"{type(task).__name__} from {os.path.abspath(args.workdir)} at step {step}; "
        f"writing to {os.path.abspath(args.out)}", flush=True)
  failed = []
  for index, (path, name) in enumerate(zip(args.images, output_names(args.images)), start=1):
    start = time.perf_counter()
    try:
      image = read_image(path)
      written = task.infer(model, image, args.out, name)
    except NotImplementedError as err:
      print(f"error: {err}", file=sys.stderr)
      return 2
    except Exception as err:  # pylint: disable=broad-except  (report, skip, go on)
      failed.append(path)
      print(f"[{index}/{len(args.images)}] {path}: FAILED: {err}", file=sys.stderr, flush=True)
      continue
    print(f"[{index}/{len(args.images)}] {path} ({image.shape[0]}x{image.shape[1]}): "
          f"{len(written)} files as {name}_* in {time.perf_counter() - start:.2f} s", flush=True)
  if failed:
    print(f"{len(failed)} of {len(args.images)} images failed: {failed}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
