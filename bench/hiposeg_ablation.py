"""HiPoSeg's loss ablation (Tables 5-6): one run per row, same seed and budget, mIoU per level.

    python bench/hiposeg_ablation.py --workdir=/tmp/hp-ablation --data_dir=/tmp/hp-tfds \
        [--base=tiny] [--steps=300] [--ablations ce high low high_low full]

Each row of `experiments/configs/hiposeg.py:ABLATIONS` is applied to the `--base` variant
(`with_ablation`) and trained with `jhseg.train.train_and_evaluate` in `WORKDIR/<row>`; all
rows share the config's seed, step count and data. A row whose `WORKDIR/<row>/row.json`
exists is read back, not retrained (delete it to rerun). The table -- which terms are on, and
the final mIoU of every level of the label tree for every evaluator -- is printed and written
as `WORKDIR/ablation.md` and `WORKDIR/ablation.json`.

Rows (section 4.3): `ce` = cross-entropy only (the DeepLabV3+ baseline, no head), `high` =
+ L_fh + L_hh (Table 6 "high-level only"), `low` = + L_fl + L_ll ("low-level only"),
`high_low` = both without L_align, `full` = eq. 14.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import sys

REPO = str(pathlib.Path(__file__).resolve().parents[1])
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, REPO)

from jhseg.tasks import hiposeg  # noqa: E402
from jhseg.train import train_and_evaluate  # noqa: E402

configs = importlib.import_module("experiments.configs.hiposeg")
TERMS = ("ce", "fh", "hh", "fl", "ll", "align")


def terms_on(name: str) -> dict[str, bool]:
  """Which loss terms the ablation row trains with."""
  head, off = configs.ABLATIONS[name]
  return {term: term == "ce" or (head and term not in off) for term in TERMS}


def run_row(name: str, args: argparse.Namespace) -> dict:
  """Trains one row (or reads its row.json) -> {"name", "terms", "miou": {eval: {level: x}}}."""
  workdir = pathlib.Path(args.workdir) / name
  saved = workdir / "row.json"
  if saved.is_file():
    return json.loads(saved.read_text())
  config = configs.with_ablation(configs.get_config(args.base), name)
  config.data.data_dir = args.data_dir
  if args.steps:
    config.num_train_steps = args.steps
    for evaluator in config.evals.values():
      if evaluator.every_steps and evaluator.every_steps > args.steps:
        evaluator.every_steps = args.steps
  summary = train_and_evaluate(config, str(workdir))
  tree = hiposeg.tree_from_config(config.model)
  row = {"name": name, "terms": terms_on(name), "steps": int(config.num_train_steps),
         "seed": int(config.seed),
         "miou": {evaluator: {level: float(summary[f"eval/{evaluator}/miou_{level}"])
                              for level in tree.level_names}
                  for evaluator in config.evals}}
  saved.write_text(json.dumps(row, indent=1))
  return row


def markdown(rows: list[dict]) -> str:
  evaluators = list(rows[0]["miou"])
  levels = list(rows[0]["miou"][evaluators[0]])
  columns = [f"{e} {level}" for e in evaluators for level in levels]
  lines = ["| row | " + " | ".join(f"L_{t}" for t in TERMS) + " | "
           + " | ".join(f"{c} mIoU (%)" for c in columns) + " |",
           "|" + "---|" * (1 + len(TERMS) + len(columns))]
  for row in rows:
    marks = ["✓" if row["terms"][t] else "" for t in TERMS]
    values = [f"{100 * row['miou'][e][level]:.2f}" for e in evaluators for level in levels]
    lines.append(f"| {row['name']} | " + " | ".join(marks + values) + " |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--data_dir", default=None, help="TFDS data_dir (config.data.data_dir)")
  parser.add_argument("--base", default="tiny", help="experiments/configs/hiposeg.py variant")
  parser.add_argument("--steps", type=int, default=None, help="training steps (default: the "
                      "variant's)")
  parser.add_argument("--ablations", nargs="+", default=list(configs.ABLATIONS),
                      choices=list(configs.ABLATIONS))
  args = parser.parse_args(argv)
  rows = [run_row(name, args) for name in args.ablations]
  table = markdown(rows)
  workdir = pathlib.Path(args.workdir)
  (workdir / "ablation.md").write_text(table)
  (workdir / "ablation.json").write_text(json.dumps(rows, indent=1))
  print(table)


if __name__ == "__main__":
  main()
