"""Ultrametric U-Net: `python -m experiments.ultrametric --config=experiments/configs/ultrametric.py:tiny --workdir=DIR`."""
from absl import app

from jhseg.train import cli

main = cli.make_main(cli.config_path("ultrametric"))

if __name__ == "__main__":
  app.run(main)
