"""Fop (objects and parts) in `python -m jhseg.evaluate`: files, summary and SEISM's values.

Reference: SEISM's stored per-image Fop of gPb-UCM on the BSDS500 test set
(github.com/jponttuset/seism, results/BSDS500/gPb-UCM/test_fop_<t>.txt, columns F, P, R;
lines 85 and 139 are images 2018 and 3063), for the cut `ucm2 > t` of the release's ucm2.
"""
import json
import shutil

import numpy as np
import pytest

from jhseg import evaluate
from jhseg.metrics import boundary
from jhseg.metrics import bsds_io

# image -> {t: (precision, recall)} from SEISM's files (6 printed digits).
SEISM_GPB_UCM = {
    "2018": {0.1: (0.141614, 0.324698), 0.3: (0.768621, 0.248207), 0.5: (0.735567, 0.215476),
             0.7: (0.735567, 0.215476)},
    "3063": {0.1: (0.022803, 0.596847), 0.3: (0.500000, 0.476958), 0.5: (0.666667, 0.453375),
             0.7: (1.000000, 0.443478)},
}


def _run(*argv):
  return evaluate.main([str(a) for a in (*argv, "--quiet", "--workers", 1)])


def test_per_image_fop_of_ucm2_cuts_matches_seism(bench):
  thresholds = boundary.bsds_thresholds(99)  # 0.01, 0.02, ..., 0.99
  for image_id, reference in SEISM_GPB_UCM.items():
    gt = bsds_io.load_ground_truth(bench / "groundTruth" / f"{image_id}.mat")
    ucm2 = bsds_io.load_prediction(bench / "ucm2" / f"{image_id}.mat", "ucm2").data
    sweep = evaluate.fop_counts("ucm2", ucm2, gt, num_thresholds=99)
    for t, (precision, recall) in reference.items():
      k = int(np.argmin(np.abs(thresholds - t)))
      assert sweep.precision[0][k] == pytest.approx(precision, abs=5e-7), (image_id, t)
      assert sweep.recall[0][k] == pytest.approx(recall, abs=5e-7), (image_id, t)


def test_cli_writes_fop_files_and_summary(bench, tmp_path, capsys):
  preds, gts = tmp_path / "ucm2", tmp_path / "gt"
  preds.mkdir()
  gts.mkdir()
  for image_id in SEISM_GPB_UCM:
    shutil.copy(bench / "ucm2" / f"{image_id}.mat", preds)
    shutil.copy(bench / "groundTruth" / f"{image_id}.mat", gts)
  out = tmp_path / "out"
  assert _run("--predictions", preds, "--ground-truth", gts, "--output", out,
              "--thresholds", 4) == 0
  assert "Fop ODS=" in capsys.readouterr().out
  summary = json.loads((out / "summary.json").read_text())["fop"]
  # Independent collection: per image and threshold (P, R) from fop_counts, then SEISM's
  # general_ods (F of the mean P and R, best threshold) and general_ois (each image's best).
  per_image = []
  for image_id in SEISM_GPB_UCM:
    gt = bsds_io.load_ground_truth(gts / f"{image_id}.mat")
    ucm2 = bsds_io.load_prediction(preds / f"{image_id}.mat", "ucm2").data
    sweep = evaluate.fop_counts("ucm2", ucm2, gt, num_thresholds=4)
    per_image.append(np.stack([sweep.precision[0], sweep.recall[0]]))
  p, r = np.stack(per_image)[:, 0], np.stack(per_image)[:, 1]  # (images, thresholds)
  f_mean = 2 * p.mean(0) * r.mean(0) / (p.mean(0) + r.mean(0))
  best = np.argmax(2 * p * r / (p + r), axis=1)
  ois_p, ois_r = p[[0, 1], best].mean(), r[[0, 1], best].mean()
  assert summary["ods_f"] == pytest.approx(f_mean.max())
  assert summary["ods_threshold"] == pytest.approx(boundary.bsds_thresholds(4)[np.argmax(f_mean)])
  assert summary["ois_f"] == pytest.approx(2 * ois_p * ois_r / (ois_p + ois_r))
  assert summary["ap"] == pytest.approx(boundary.average_precision(r.mean(0), p.mean(0)))
  assert [e["id"] for e in summary["per_image"]] == list(SEISM_GPB_UCM)
  # The text files: eval_bdry*.txt layouts, same numbers as summary.json.
  row = np.loadtxt(out / "eval_fop.txt")
  keys = ("ods_threshold", "ods_recall", "ods_precision", "ods_f", "ois_recall", "ois_precision",
          "ois_f", "ap")
  np.testing.assert_allclose(row, [summary[k] for k in keys], rtol=1e-5)
  thr = np.loadtxt(out / "eval_fop_thr.txt", ndmin=2)
  np.testing.assert_allclose(thr, np.c_[boundary.bsds_thresholds(4), r.mean(0), p.mean(0), f_mean],
                             rtol=1e-5)
  img = np.loadtxt(out / "eval_fop_img.txt", ndmin=2)
  assert img.shape == (2, 5) and img[:, 0].tolist() == [1, 2]
  assert [len(line) for line in (out / "eval_fop_img.txt").read_text().splitlines()] == [54, 54]


def test_segmentation_lists_get_fop_and_no_fop_and_soft_maps_skip_it(bench, tmp_path):
  gts = tmp_path / "gt"
  gts.mkdir()
  shutil.copy(bench / "groundTruth" / "2018.mat", gts)
  segs = tmp_path / "segs"
  segs.mkdir()
  shutil.copy(bench / "segs" / "2018.mat", segs)
  assert _run("--predictions", segs, "--ground-truth", gts, "--output", tmp_path / "s") == 0
  summary = json.loads((tmp_path / "s" / "summary.json").read_text())
  num_segs = len(bsds_io.load_prediction(segs / "2018.mat", "segs").data)
  # One sweep position per segmentation.
  assert summary["fop"]["thresholds"] == list(range(1, num_segs + 1))
  assert (tmp_path / "s" / "eval_fop.txt").is_file()
  assert _run("--predictions", segs, "--ground-truth", gts, "--output", tmp_path / "n",
              "--no-fop") == 0
  assert "fop" not in json.loads((tmp_path / "n" / "summary.json").read_text())
  assert not list((tmp_path / "n").glob("eval_fop*"))
  pngs = tmp_path / "png"
  pngs.mkdir()
  shutil.copy(bench / "png" / "2018.png", pngs)
  assert _run("--predictions", pngs, "--ground-truth", gts, "--output", tmp_path / "p",
              "--thresholds", 3) == 0
  assert not list((tmp_path / "p").glob("eval_fop*"))
