"""`python -m jhseg.evaluate` on hierarchical TFDS ground truth: LRF per level, FDF, PNGs.

Ground truth: synthetic_scenes/tiny (test split, 16 scenes of 32x32, ucm levels
{0, 0.5, 1}, no `image/id`: ids are the record indices). Expected values are
worked out from the ground-truth arrays with NumPy, not from the code under test.
"""
import json
import pathlib

import numpy as np
import pytest
from scipy import ndimage

from jhseg import evaluate
from jhseg.metrics import boundary
from jhseg.metrics import level_recovery

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SPEC = "tfds:synthetic_scenes/tiny/test"


@pytest.fixture(name="records", scope="module")
def fixture_records(synthetic_data_dir):
  import tensorflow_datasets as tfds
  source = tfds.data_source("synthetic_scenes/tiny", split="test", data_dir=synthetic_data_dir)
  return [{"ucm": np.asarray(r["ucm"]), "instances": np.asarray(r["instances"])}
          for r in (source[k] for k in range(len(source)))]


def _write_predictions(folder: pathlib.Path, ucms) -> pathlib.Path:
  folder.mkdir()
  for k, ucm in enumerate(ucms):
    np.save(folder / f"{k}.npy", ucm)  # interpixel (2H-1, 2W-1), named by record index
  return folder


def _run(predictions, output, data_dir, *extra):
  code = evaluate.main(["--predictions", str(predictions), "--ground-truth", SPEC, "--tfds-data-dir",
                        data_dir, "--output", str(output), "--workers", "1", "--quiet", *extra])
  assert code == 0
  return json.loads((output / "summary.json").read_text())


def _edges(ucm):
  return ucm[0::2, 1::2], ucm[1::2, 0::2]


def _is_png(path: pathlib.Path) -> bool:
  return path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE


def test_ground_truth_as_prediction_recovers_every_level(records, synthetic_data_dir, tmp_path):
  predictions = _write_predictions(tmp_path / "pred", [r["ucm"] for r in records])
  out = tmp_path / "out"
  summary = _run(predictions, out, synthetic_data_dir)
  levels = summary["level_recovery"]
  t = np.asarray(levels["thresholds"])
  np.testing.assert_allclose(t, level_recovery.sweep_thresholds(99))  # 0, 0.01, ..., 1
  assert levels["levels"] == [0.5, 1.0]
  assert levels["num_images"] == len(records) == summary["num_images"]
  assert summary["image_ids"] == sorted(str(k) for k in range(len(records)))
  # Sec. 4: contours at t are weights >= t: a level-lambda edge is present exactly while
  # t <= lambda, so LRF(lambda, t) = 1 for t <= lambda, 0 above, and FDF = 0 everywhere.
  for name, level in (("0.5", 0.5), ("1", 1.0)):
    lrf = np.asarray(levels["lrf"][name])
    np.testing.assert_array_equal(lrf[t <= level], 1.0)
    np.testing.assert_array_equal(lrf[t > level], 0.0)
  np.testing.assert_array_equal(levels["fdf"], 0.0)
  s = levels["summary"]
  assert s["survival"] == {"0.5": 0.5, "1": 1.0}
  assert s["mean_lrf"]["0.5"] == pytest.approx(np.mean(t <= 0.5))
  assert s["mean_lrf"]["1"] == 1.0 and s["mean_fdf"] == 0.0
  assert levels["per_class"] == {}  # synthetic_scenes has no instance_classes
  assert _is_png(out / "lrf_fdf.png") and _is_png(out / "pr_curve.png")
  assert not (out / "per_class.png").exists()
  # The PR curves ran against the finest ground-truth segmentation, on the same sweep.
  assert summary["boundary"]["ods_f"] == pytest.approx(1.0)
  np.testing.assert_allclose(summary["boundary"]["thresholds"], t)
  assert summary["region"]["covering_ods"] == pytest.approx(1.0)


def test_prediction_without_part_level_recovers_no_part(records, synthetic_data_dir, tmp_path):
  # Part boundaries (and the corners between them) dropped; corners stay the max of their edges.
  predictions = _write_predictions(tmp_path / "pred", [np.where(r["ucm"] == 0.5, 0, r["ucm"])
                                                       for r in records])
  levels = _run(predictions, tmp_path / "out", synthetic_data_dir)["level_recovery"]
  np.testing.assert_array_equal(levels["lrf"]["0.5"], 0.0)
  np.testing.assert_array_equal(levels["lrf"]["1"], 1.0)
  np.testing.assert_array_equal(levels["fdf"], 0.0)  # every predicted contour is an object contour
  assert levels["summary"]["mean_lrf"]["0.5"] == 0.0


def _outside_pixel(instances, radius=20):
  """A pixel farther than `radius` px from every object, or None."""
  far = ndimage.distance_transform_edt(instances == 0) > radius
  rows, cols = np.nonzero(far)
  return (rows[0], cols[0]) if rows.size else None


def _with_pixel_contour(ucm, pixel):
  """`ucm` with every edge of `pixel` set to 1 (a closed one-pixel region); returns (ucm, #edges)."""
  ucm = ucm.copy()
  i, j = pixel
  sites = [(2 * i + di, 2 * j + dj) for di, dj in ((0, -1), (0, 1), (-1, 0), (1, 0))
           if 0 <= 2 * i + di < ucm.shape[0] and 0 <= 2 * j + dj < ucm.shape[1]]
  for site in sites:
    assert ucm[site] == 0  # background-background edge: no ground-truth contour
    ucm[site] = 1.0
  # Corners: the max of their incident edges, as an interpixel UCM.
  for ci in range(2 * i - 1, 2 * i + 2, 2):
    for cj in range(2 * j - 1, 2 * j + 2, 2):
      if 0 <= ci < ucm.shape[0] and 0 <= cj < ucm.shape[1]:
        ucm[ci, cj] = max(ucm[ci, cj - 1], ucm[ci, cj + 1], ucm[ci - 1, cj], ucm[ci + 1, cj])
  return ucm, len(sites)


def test_neighbourhood_drops_contours_far_from_objects(records, synthetic_data_dir, tmp_path):
  preds, added = [], 0
  for r in records:
    pixel = _outside_pixel(r["instances"])
    if pixel is None:
      preds.append(r["ucm"])
    else:
      ucm, n = _with_pixel_contour(r["ucm"], pixel)
      preds.append(ucm)
      added += n
  if not added:
    pytest.skip("no synthetic test scene has a pixel 20 px away from every object")
  predictions = _write_predictions(tmp_path / "pred", preds)
  # Default protocol, for all three metrics: the spurious contour lies outside the object
  # neighbourhood and is dropped, so FDF stays 0 and the PR curves stay perfect.
  default = _run(predictions, tmp_path / "out", synthetic_data_dir)
  np.testing.assert_array_equal(default["level_recovery"]["fdf"], 0.0)
  assert default["boundary"]["ods_f"] == pytest.approx(1.0)
  # Whole images: FDF(t) = spurious boundary pixels / all predicted boundary pixels at t, the
  # maps drawn as the official seg2bdry; 0.0075 x 45 px < 1 px: only coincident pixels match.
  whole_summary = _run(predictions, tmp_path / "whole", synthetic_data_dir, "--no-neighbourhood")
  whole = whole_summary["level_recovery"]
  t = np.asarray(whole["thresholds"])
  machine, false = np.zeros(len(t)), np.zeros(len(t))
  for r, pred in zip(records, preds):
    for k, th in enumerate(t):
      drawn = [boundary.boundaries_from_segmentation(level_recovery.contour_regions(
          (h >= th) & (h > 0), (v >= th) & (v > 0))) for h, v in (_edges(pred), _edges(r["ucm"]))]
      machine[k] += drawn[0].sum()
      false[k] += (drawn[0] & ~drawn[1]).sum()
  np.testing.assert_allclose(whole["fdf"], false / machine)
  assert np.all(false > 0)
  np.testing.assert_allclose(whole_summary["boundary"]["precision"], 1 - false / machine)
  for name, level in (("0.5", 0.5), ("1", 1.0)):  # recovery unchanged by the extra contour
    np.testing.assert_array_equal(np.asarray(whole["lrf"][name])[t <= level], 1.0)


def test_per_class_curves_and_figure(tmp_path):
  # 8x64 image: object 1 (class 7) split into two parts, object 2 (class 3) more than
  # 2 x 20 px away, so each instance's crop (box + 20 px) holds that instance only.
  instances = np.zeros((8, 64), np.int32)
  instances[1:4, 1:4] = 1
  instances[4:7, 50:53] = 2
  parts = instances * 10
  parts[1:4, 1:2] = 11  # first column of object 1 is another part
  h = np.where(instances[:, :-1] != instances[:, 1:], 1.0, np.where(parts[:, :-1] != parts[:, 1:], 0.5, 0.0))
  v = np.where(instances[:-1] != instances[1:], 1.0, np.where(parts[:-1] != parts[1:], 0.5, 0.0))
  ucm = np.zeros((15, 127), np.float32)
  ucm[0::2, 1::2], ucm[1::2, 0::2] = h, v
  ucm[1::2, 1::2] = np.maximum(np.maximum(h[:-1], h[1:]), np.maximum(v[:, :-1], v[:, 1:]))
  truth = evaluate.LevelTruth(ucm=ucm, levels=(0.5, 1.0), instances=instances,
                              instance_classes={1: 7, 2: 3})
  ucm2 = np.pad(ucm.astype(np.float64), 1, mode="edge")
  accumulator = evaluate.level_counts(ucm2, truth, num_thresholds=9)
  # Hand counts of boundary pixels drawn as seg2bdry (a pixel is on when an edge at its
  # lower-right corner is): each 3x3 square's 12 contour edges draw a 4x4 ring of 12 pixels
  # (level 1); the 3 part edges between columns 1 and 2 draw (0..3, 1), of which (1, 1) and
  # (2, 1) are off the ring (level 0.5; on the ring the object level wins).
  assert accumulator.total.truth.tolist() == [2, 12 + 12]
  assert accumulator.per_class[7].counts.truth.tolist() == [2, 12]
  assert accumulator.per_class[3].counts.truth.tolist() == [0, 12]
  table = evaluate.level_recovery_dict(accumulator)
  assert sorted(table["per_class"]) == ["3", "7"]
  assert table["per_class"]["7"]["num_instances"] == 1
  t = np.asarray(table["thresholds"])
  np.testing.assert_array_equal(np.asarray(table["per_class"]["7"]["lrf"]["0.5"])[t <= 0.5], 1.0)
  np.testing.assert_array_equal(np.asarray(table["per_class"]["7"]["lrf"]["0.5"])[t > 0.5], 0.0)
  assert table["per_class"]["3"]["lrf"]["0.5"] == [None] * 11  # no part boundary: nan -> null
  # Per-class boundary benchmark (Fig. 8): the target itself scores 1 in each class.
  assert table["per_class"]["7"]["boundary"]["ods_f"] == pytest.approx(1.0)
  assert table["per_class"]["3"]["boundary"]["ois_f"] == pytest.approx(1.0)
  assert table["per_class"]["3"]["summary"]["mean_lrf"]["0.5"] is None
  json.dumps(table, allow_nan=False)  # strict JSON
  np.testing.assert_array_equal(table["per_class"]["3"]["lrf"]["1"], 1.0)
  np.testing.assert_array_equal(table["per_class"]["3"]["fdf"], 0.0)
  paths = evaluate.write_level_figures(tmp_path, accumulator, "per class")
  assert [p.name for p in paths] == ["lrf_fdf.png", "per_class.png"]
  assert all(_is_png(p) for p in paths)


def test_help_documents_no_neighbourhood(capsys):
  with pytest.raises(SystemExit):
    evaluate.main(["--help"])
  text = capsys.readouterr().out
  assert "--no-neighbourhood" in text and "lrf_fdf.png" in text


def test_missing_prediction_names_the_record_index(records, synthetic_data_dir, tmp_path, capsys):
  predictions = _write_predictions(tmp_path / "pred", [r["ucm"] for r in records])
  (predictions / "3.npy").unlink()
  code = evaluate.main(["--predictions", str(predictions), "--ground-truth", SPEC, "--tfds-data-dir",
                        synthetic_data_dir, "--output", str(tmp_path / "out"), "--quiet"])
  assert code == 2
  assert "3.mat/.npy/.png" in capsys.readouterr().err


def test_worker_processes_give_the_same_counts(records, synthetic_data_dir, tmp_path):
  predictions = _write_predictions(tmp_path / "pred", [np.where(r["ucm"] == 0.5, 0, r["ucm"])
                                                       for r in records[:4]] + [r["ucm"] for r in records[4:]])
  tasks = evaluate.make_tasks(predictions, SPEC, tfds_data_dir=synthetic_data_dir, num_thresholds=9)
  serial = evaluate.collect_levels(evaluate.evaluate_tasks(tasks, workers=1, progress=False))
  pooled = evaluate.collect_levels(evaluate.evaluate_tasks(tasks, workers=2, progress=False))
  assert pooled.num_images == serial.num_images == len(records)
  for field in ("truth", "recovered", "predicted", "false"):
    np.testing.assert_array_equal(getattr(pooled.total, field), getattr(serial.total, field))
  # 4 of 16 images without parts: part LRF up to 0.5 is the share of part boundary pixels in the
  # other 12; part pixels are drawn (seg2bdry) by the finest cut but not by the objects' cut.
  def part_pixels(ucm):
    h, v = _edges(ucm)
    drawn = [boundary.boundaries_from_segmentation(level_recovery.contour_regions(h >= t, v >= t))
             for t in (0.5, 1.0)]
    return int((drawn[0] & ~drawn[1]).sum())
  parts = [part_pixels(r["ucm"]) for r in records]
  np.testing.assert_allclose(serial.result()["lrf"][0][:4], sum(parts[4:]) / sum(parts))


def _square_ucm2(size, rows, cols):
  """ucm2 ((2H+1)x(2W+1)) and interpixel ucm of one object (level 1) on a size x size image."""
  instances = np.zeros((size, size), np.int32)
  instances[rows, cols] = 1
  h = (instances[:, :-1] != instances[:, 1:]).astype(np.float64)
  v = (instances[:-1] != instances[1:]).astype(np.float64)
  ucm = np.zeros((2 * size - 1, 2 * size - 1))
  ucm[0::2, 1::2], ucm[1::2, 0::2] = h, v
  ucm[1::2, 1::2] = np.maximum(np.maximum(h[:-1], h[1:]), np.maximum(v[:, :-1], v[:, 1:]))
  return instances, ucm, np.pad(ucm, 1, mode="edge")


@pytest.mark.parametrize("level_matching, lrf, fdf", [
    # 0.0075 x the 141-px diagonal = 1.06 px >= the shift: every boundary pixel matches.
    ("bsds", 1.0, 0.0),
    # Edges: the truth's 10 x 10 square has 40; shifted one column right, only the 9 + 9
    # top / bottom edges over columns 11..19 coincide: LRF = 18 / 40, FDF = 22 / 40.
    ("exact", 18 / 40, 22 / 40)])
def test_level_matching_of_a_one_pixel_shift(level_matching, lrf, fdf):
  instances, truth_ucm, _ = _square_ucm2(100, slice(10, 20), slice(10, 20))
  _, _, shifted = _square_ucm2(100, slice(10, 20), slice(11, 21))
  truth = evaluate.LevelTruth(ucm=truth_ucm, levels=(1.0,), instances=instances)
  table = evaluate.level_recovery_dict(
      evaluate.level_counts(shifted, truth, num_thresholds=3, level_matching=level_matching))
  t = np.asarray(table["thresholds"])
  np.testing.assert_allclose(np.asarray(table["lrf"]["1"])[t > 0], lrf)
  np.testing.assert_allclose(np.asarray(table["fdf"])[t > 0], fdf)


def test_cli_level_matching_flag_reaches_the_level_counts(records, synthetic_data_dir, tmp_path,
                                                          monkeypatch):
  seen = []
  original = evaluate.level_counts

  def spy(*args, **kwargs):
    seen.append(kwargs["level_matching"])
    return original(*args, **kwargs)

  monkeypatch.setattr(evaluate, "level_counts", spy)
  predictions = _write_predictions(tmp_path / "pred", [r["ucm"] for r in records])
  summary = _run(predictions, tmp_path / "out", synthetic_data_dir, "--level-matching", "exact",
                 "--no-fop")
  assert set(seen) == {"exact"} and len(seen) == len(records)
  np.testing.assert_array_equal(summary["level_recovery"]["fdf"], 0.0)
  with pytest.raises(SystemExit):
    evaluate.build_parser().parse_args(["--predictions", "p", "--ground-truth", "g", "--output",
                                        "o", "--level-matching", "nearest"])
