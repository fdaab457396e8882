"""jhseg's TFDS builders; importing this package registers every one of them with TFDS.

So `tfds build NAME --imports=tfds_builders ...` works from any folder (with jhseg installed
or on PYTHONPATH), as `tfds.builder(NAME)` / `tfds.data_source(NAME)` after
`import tfds_builders`. Every builder writes array_record unless `--file_format` says
otherwise (`tfds.data_source` and grain read only random-access formats).

`BUILDERS` is the explicit table of dataset name -> builder class; a new builder package
adds one line here (tests/test_tfds_builders_cli.py checks that none is missing).
"""
from tfds_builders.ade20k import Builder as _Ade20k
from tfds_builders.bsds500 import Builder as _Bsds500
from tfds_builders.cityscapes_hier import Builder as _CityscapesHier
from tfds_builders.imagenet100 import Builder as _Imagenet100
from tfds_builders.mapillary_vistas import Builder as _MapillaryVistas
from tfds_builders.pascal_context import Builder as _PascalContext
from tfds_builders.partimagenet import Builder as _PartImageNet
from tfds_builders.pascal_part_108 import Builder as _PascalPart108
from tfds_builders.synthetic_scenes import Builder as _SyntheticScenes
from tfds_builders.ultrametric_pascal_part import Builder as _UltrametricPascalPart
from tfds_builders.voc2012_sbd import Builder as _Voc2012Sbd

BUILDERS = {
    "ade20k": _Ade20k,
    "bsds500": _Bsds500,
    "cityscapes_hier": _CityscapesHier,
    "imagenet100": _Imagenet100,
    "mapillary_vistas": _MapillaryVistas,
    "pascal_context": _PascalContext,
    "partimagenet": _PartImageNet,
    "pascal_part_108": _PascalPart108,
    "synthetic_scenes": _SyntheticScenes,
    "ultrametric_pascal_part": _UltrametricPascalPart,
    "voc2012_sbd": _Voc2012Sbd,
}

__all__ = ["BUILDERS"]
