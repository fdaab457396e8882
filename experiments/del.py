"""DEL (Liu et al., IJCAI 2018):
`python -m experiments.del --config=experiments/configs/del.py:tiny --workdir=DIR`."""
from absl import app

from jhseg.train import cli

main = cli.make_main(cli.config_path("del"))

if __name__ == "__main__":
  app.run(main)
