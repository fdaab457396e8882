"""Per-pixel classification baseline: `python -m experiments.pixel_classification --workdir=DIR`."""
from absl import app

from jhseg.train import cli

main = cli.make_main(cli.config_path("pixel_classification"))

if __name__ == "__main__":
  app.run(main)
