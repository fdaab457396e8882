"""`jhseg.evaluate` refuses non-finite or out-of-range predictions naming the file, and warns
about prediction files without ground truth (issue 11.6 and 11.7)."""
import shutil

import numpy as np
import pytest
import scipy.io

from jhseg import evaluate


def _run(*argv):
  return evaluate.main([str(a) for a in (*argv, "--quiet", "--workers", 1, "--thresholds", 3)])


@pytest.fixture(name="one_image")
def fixture_one_image(bench, tmp_path):
  """(predictions folder, ground-truth folder, the release's ucm2 of image 2018)."""
  preds, gts = tmp_path / "preds", tmp_path / "gt"
  preds.mkdir()
  gts.mkdir()
  shutil.copy(bench / "groundTruth" / "2018.mat", gts)
  return preds, gts, scipy.io.loadmat(bench / "ucm2" / "2018.mat")["ucm2"]


def test_ucm2_with_nan_is_an_error_naming_the_file(one_image, tmp_path, capsys):
  preds, gts, ucm2 = one_image
  scipy.io.savemat(preds / "2018.mat", {"ucm2": ucm2})
  assert _run("--predictions", preds, "--ground-truth", gts, "--output", tmp_path / "ok") == 0
  ucm2 = ucm2.copy()
  ucm2[5, 7] = np.nan
  scipy.io.savemat(preds / "2018.mat", {"ucm2": ucm2})
  assert _run("--predictions", preds, "--ground-truth", gts, "--output", tmp_path / "o") == 2
  err = capsys.readouterr().err
  assert (f"{preds / '2018.mat'}: 'ucm2' has 1 non-finite values (NaN or inf), the first at "
          f"index (5, 7)") in err


def test_ucm2_outside_unit_range_is_an_error(one_image, tmp_path, capsys):
  preds, gts, ucm2 = one_image
  scipy.io.savemat(preds / "2018.mat", {"ucm2": ucm2 * 255})  # an 8-bit scaled map
  assert _run("--predictions", preds, "--ground-truth", gts, "--output", tmp_path / "o") == 2
  err = capsys.readouterr().err
  assert (f"{preds / '2018.mat'}: 'ucm2' has values in [0, {ucm2.max() * 255:g}]; "
          f"expected [0, 1]") in err


@pytest.mark.parametrize("bad", [np.inf, -0.5])
def test_npy_soft_map_with_inf_or_negative_values(one_image, tmp_path, capsys, bad):
  preds, gts, ucm2 = one_image
  soft = ucm2[2::2, 2::2].copy()
  soft[0, 0] = bad
  np.save(preds / "2018.npy", soft)
  assert _run("--predictions", preds, "--ground-truth", gts, "--output", tmp_path / "o") == 2
  assert f"{preds / '2018.npy'}: the array has" in capsys.readouterr().err


def test_segmentation_with_nan_labels(one_image, tmp_path, capsys):
  preds, gts, _ = one_image
  labels = np.ones((321, 481))
  labels[3, 3] = np.nan
  cell = np.empty((1, 2), dtype=object)
  cell[0, 0], cell[0, 1] = np.ones((321, 481)), labels
  scipy.io.savemat(preds / "2018.mat", {"segs": cell})
  assert _run("--predictions", preds, "--ground-truth", gts, "--output", tmp_path / "o") == 2
  assert f"{preds / '2018.mat'}: segs{{2}} holds non-finite or non-integer labels" in \
      capsys.readouterr().err


def test_predictions_without_ground_truth_are_counted_in_a_warning(one_image, tmp_path):
  preds, gts, ucm2 = one_image
  for image_id in ("2018", "9999", "1234", "0042"):
    scipy.io.savemat(preds / f"{image_id}.mat", {"ucm2": ucm2})
  (preds / "notes.txt").write_text("not a prediction")
  with pytest.warns(UserWarning, match=r"3 prediction file\(s\) have no ground-truth image and are "
                                       r"ignored; first ids: \['0042', '1234', '9999'\]"):
    assert _run("--predictions", preds, "--ground-truth", gts, "--output", tmp_path / "o") == 0
