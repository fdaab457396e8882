"""`python -m jhseg.evaluate` on the official sample: files, formats, values, errors."""
import json
import shutil

import numpy as np
import pytest

from jhseg import evaluate

BOUNDARY_FILES = ("eval_bdry.txt", "eval_bdry_thr.txt", "eval_bdry_img.txt")
REGION_FILES = ("eval_cover.txt", "eval_cover_th.txt", "eval_cover_img.txt", "eval_RI_VOI.txt",
                "eval_RI_VOI_thr.txt")



def _run(*argv):
  return evaluate.main([*map(str, argv), "--quiet"])


def _check_against_official(out, ref_dir, names, atol):
  for name in names:
    mine_lines = (out / name).read_text().splitlines()
    ref_lines = (ref_dir / name).read_text().splitlines()
    assert [len(l) for l in mine_lines] == [len(l) for l in ref_lines], name  # same %10g/%10d layout
    np.testing.assert_allclose(np.loadtxt(out / name, ndmin=2), np.loadtxt(ref_dir / name, ndmin=2),
                               rtol=0, atol=atol, err_msg=name)


def test_ucm2_folder_reproduces_test_1(bench, tmp_path):
  out = tmp_path / "out"
  assert _run("--predictions", bench / "ucm2", "--ground-truth", bench / "groundTruth", "--output", out,
              "--thresholds", 5, "--workers", 2) == 0
  _check_against_official(out, bench / "test_1", ("eval_bdry.txt", "eval_bdry_thr.txt"), 1e-3)
  _check_against_official(out, bench / "test_1", ("eval_bdry_img.txt",), 1.5e-3)  # official per-image noise
  _check_against_official(out, bench / "test_1", REGION_FILES, 1e-4)
  summary = json.loads((out / "summary.json").read_text())
  assert summary["image_ids"] == ["2018", "3063", "5096", "6046", "8068"]
  assert summary["boundary"]["ods_f"] == pytest.approx(0.704632, abs=1e-3)
  assert summary["region"]["covering_ods"] == pytest.approx(0.654023, abs=1e-4)
  assert [p["id"] for p in summary["boundary"]["per_image"]] == summary["image_ids"]
  assert summary["region"]["per_image"][0]["covering"] == pytest.approx(0.773928, abs=1e-4)
  assert (out / "pr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_folder_has_boundary_files_only(bench, tmp_path):
  out = tmp_path / "out"
  assert _run("--predictions", bench / "png", "--ground-truth", bench / "groundTruth", "--output", out,
              "--thresholds", 5, "--workers", 1, "--kind", "png") == 0
  _check_against_official(out, bench / "test_2", ("eval_bdry.txt", "eval_bdry_thr.txt"), 1e-3)
  assert not any((out / name).exists() for name in REGION_FILES)


def test_npy_ucm2_equals_mat_ucm2_and_workers_agree(bench, tmp_path):
  import scipy.io  # pylint: disable=g-import-not-at-top
  preds, mats, gts = tmp_path / "npy", tmp_path / "mats", tmp_path / "gt"
  for folder in (preds, mats, gts):
    folder.mkdir()
  for i in ("5096", "6046"):
    np.save(preds / f"{i}.npy", scipy.io.loadmat(bench / "ucm2" / f"{i}.mat")["ucm2"])
    shutil.copy(bench / "ucm2" / f"{i}.mat", mats)
    shutil.copy(bench / "groundTruth" / f"{i}.mat", gts)
  assert _run("--predictions", preds, "--ground-truth", gts, "--output", tmp_path / "a", "--thresholds", 3,
              "--workers", 2) == 0
  assert _run("--predictions", mats, "--ground-truth", gts, "--output", tmp_path / "b", "--thresholds", 3,
              "--workers", 1) == 0
  for name in BOUNDARY_FILES + REGION_FILES:
    assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text(), name
  bdry, reg = evaluate.evaluate_folder(mats, str(gts), num_thresholds=3)
  summary = json.loads((tmp_path / "b" / "summary.json").read_text())
  assert bdry.ods_f == pytest.approx(summary["boundary"]["ods_f"])
  assert reg.covering_ods == pytest.approx(summary["region"]["covering_ods"])


def test_help_documents_every_option():
  parser = evaluate.build_parser()
  text = parser.format_help()
  for action in parser._actions:  # pylint: disable=protected-access
    assert action.help, action.dest
  for option in ("--predictions", "--ground-truth", "--output", "--kind", "--thresholds", "--workers",
                 "--max-distance", "--no-thin", "--matcher", "--tfds-data-dir"):
    assert option in text


def test_bad_paths_and_files_are_named(bench, tmp_path, capsys):
  missing = tmp_path / "nowhere"
  assert _run("--predictions", missing, "--ground-truth", bench / "groundTruth", "--output", tmp_path / "o") == 2
  assert str(missing) in capsys.readouterr().err
  # A ground-truth image without a prediction.
  preds = tmp_path / "preds"
  preds.mkdir()
  shutil.copy(bench / "ucm2" / "2018.mat", preds)
  assert _run("--predictions", preds, "--ground-truth", bench / "groundTruth", "--output", tmp_path / "o",
              "--kind", "ucm2") == 2
  assert "3063.mat" in capsys.readouterr().err
  # An unreadable prediction.
  gts = tmp_path / "gt"
  gts.mkdir()
  shutil.copy(bench / "groundTruth" / "2018.mat", gts)
  (preds / "2018.mat").write_bytes(b"not a mat file")
  assert _run("--predictions", preds, "--ground-truth", gts, "--output", tmp_path / "o", "--kind", "ucm2",
              "--workers", 1) == 2
  err = capsys.readouterr().err
  assert "2018.mat" in err and "MATLAB" in err
  # A prediction of the wrong size.
  np.save(preds / "2018.npy", np.zeros((10, 10)))
  assert _run("--predictions", preds, "--ground-truth", gts, "--output", tmp_path / "o", "--kind", "npy",
              "--workers", 1) == 2
  assert "2018.npy" in capsys.readouterr().err


def test_zero_frame_ucm2_is_flagged(bench, tmp_path):
  import scipy.io  # pylint: disable=g-import-not-at-top
  preds, gts = tmp_path / "npy", tmp_path / "gt"
  preds.mkdir()
  gts.mkdir()
  ucm2 = scipy.io.loadmat(bench / "ucm2" / "5096.mat")["ucm2"]
  assert np.array_equal(ucm2, np.pad(ucm2[1:-1, 1:-1], 1, mode="edge"))  # the release's convention
  ucm2[[0, -1], :] = 0
  ucm2[:, [0, -1]] = 0
  np.save(preds / "5096.npy", ucm2)
  shutil.copy(bench / "groundTruth" / "5096.mat", gts)
  with pytest.warns(UserWarning, match="5096.npy.*frame"):
    assert _run("--predictions", preds, "--ground-truth", gts, "--output", tmp_path / "o", "--thresholds", 3,
                "--workers", 1) == 0


def test_segmentation_lists_of_different_lengths_are_named(bench, tmp_path, capsys):
  import scipy.io  # pylint: disable=g-import-not-at-top
  preds, gts = tmp_path / "segs", tmp_path / "gt"
  preds.mkdir()
  gts.mkdir()
  for i, keep in (("5096", 3), ("6046", 2)):
    segs = scipy.io.loadmat(bench / "segs" / f"{i}.mat")["segs"]
    scipy.io.savemat(preds / f"{i}.mat", {"segs": segs[:, :keep]})
    shutil.copy(bench / "groundTruth" / f"{i}.mat", gts)
  assert _run("--predictions", preds, "--ground-truth", gts, "--output", tmp_path / "o", "--workers", 1) == 2
  err = capsys.readouterr().err
  assert "6046" in err and "thresholds" in err
