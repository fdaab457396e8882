"""CAST (Ke, Mo, Yu, ICLR 2024) trained with MoCo-v3:
`python -m experiments.cast --config=experiments/configs/cast.py:tiny --workdir=DIR`."""
from absl import app

from jhseg.train import cli

main = cli.make_main(cli.config_path("cast"))

if __name__ == "__main__":
  app.run(main)
