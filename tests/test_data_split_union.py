"""Split unions "a+b" in `jhseg.data.load_source` (DEL trains on BSDS500 train+val)."""
import ml_collections
import numpy as np
import pytest

from jhseg.data import sources


def test_concatenated_records_order_indexing_and_bounds():
  records = sources.ConcatenatedRecords([["a0", "a1"], [], ["c0", "c1", "c2"]])
  assert len(records) == 5
  assert [records[i] for i in range(5)] == ["a0", "a1", "c0", "c1", "c2"]
  assert records[-1] == "c2" and records[-5] == "a0"
  assert records.__getitems__([4, 0, 2]) == ["c2", "a0", "c0"]
  with pytest.raises(IndexError, match=r"record 5 out of range \[0, 5\)"):
    records[5]
  with pytest.raises(IndexError):
    records[-6]
  with pytest.raises(TypeError, match="must be an int"):
    records[1:3]


@pytest.mark.parametrize("split, message", [
    ("train+val", r"no split 'val' \(in 'train\+val'\); available: \['test', 'train', "
                  r"'validation'\]"),
    ("nope", r"no split 'nope'"),
    ("train+train", r"names a split twice"),
])
def test_split_parts_rejects_unknown_and_repeated_names(split, message):
  with pytest.raises(ValueError, match=message):
    sources.split_parts(split, ["train", "validation", "test"])


def test_split_parts_accepts_names_and_unions():
  assert sources.split_parts("test", ["train", "test"]) == ["test"]
  assert sources.split_parts("train+test", ["train", "test"]) == ["train", "test"]


def test_load_source_union_is_the_parts_in_order(synthetic_data_dir):
  data = ml_collections.ConfigDict({"name": "synthetic_scenes/tiny",
                                    "data_dir": synthetic_data_dir})
  train = sources.load_source(data, "train")
  validation = sources.load_source(data, "validation")
  union = sources.load_source(data, "train+validation")
  assert len(union) == len(train) + len(validation)
  for index, expected in ((0, train[0]), (len(train) - 1, train[len(train) - 1]),
                          (len(train), validation[0]), (len(union) - 1, validation[-1])):
    np.testing.assert_array_equal(union[index]["image"], expected["image"])
    np.testing.assert_array_equal(union[index]["parts"], expected["parts"])
  with pytest.raises(ValueError, match=r"dataset 'synthetic_scenes/tiny': no split 'val' "
                                       r"\(in 'train\+val'\); available: \['test', 'train', "
                                       r"'validation'\]"):
    sources.load_source(data, "train+val")
