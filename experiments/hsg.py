"""HSG (Ke et al., CVPR 2022): `python -m experiments.hsg --config=experiments/configs/hsg.py:tiny --workdir=DIR`."""
from absl import app

from jhseg.train import cli

main = cli.make_main(cli.config_path("hsg"))

if __name__ == "__main__":
  app.run(main)
