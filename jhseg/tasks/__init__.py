"""The methods' pluggable pieces, by name: `config.task` selects one."""
from jhseg.tasks.base import Task
from jhseg.tasks.cast import CASTMoCo
from jhseg.tasks.cast_deit import CASTDeiT
from jhseg.tasks.cast_seg import CASTSegmentation
from jhseg.tasks.del_task import DEL, DELSemanticPretrain
from jhseg.tasks.hiposeg import HiPoSeg
from jhseg.tasks.hsg import HSG
from jhseg.tasks.pixel_classification import PixelClassification
from jhseg.tasks.ultrametric import UltrametricUNet

TASKS: dict[str, type[Task]] = {
    "pixel_classification": PixelClassification,
    "ultrametric": UltrametricUNet,
    "hsg": HSG,
    "del": DEL,
    "del_sbd_pretrain": DELSemanticPretrain,
    "hiposeg": HiPoSeg,
    "cast": CASTMoCo,
    "cast_deit": CASTDeiT,
    "cast_seg": CASTSegmentation,
}


def get_task(name: str) -> type[Task]:
  """The Task class called `name`; the error lists the valid names."""
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r} (config.task); valid tasks: {sorted(TASKS)}")
  return TASKS[name]
