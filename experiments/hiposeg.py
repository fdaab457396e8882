"""HiPoSeg (Lim et al.):
`python -m experiments.hiposeg --config=experiments/configs/hiposeg.py:tiny --workdir=DIR`."""
from absl import app

from jhseg.train import cli

main = cli.make_main(cli.config_path("hiposeg"))

if __name__ == "__main__":
  app.run(main)
