"""Evaluation metrics for hierarchical segmentation.

One topical module per family, each accumulating per-image sufficient
statistics (`add(...)` per image) and reducing them on the host (`result()`),
so dataset evaluations can run over images in worker processes:

- `boundary`, `region`, `bsds_io`: the BSDS500 boundary and region benchmarks.
- `level_recovery`: Level Recovery Fraction and False Discovery Fraction
  (Lapertot, Chierchia, Perret), with the object-neighbourhood protocol.
- `ucm_evaluation`: the host-side evaluation of predicted UCMs against a
  hierarchical target: PR, LRF and FDF from one BSDS matching per cut, per class.
- `covering`: NFCovering per hierarchy level (HSG) and the region F-score.
- `fop`: objects-and-parts F-measure (Pont-Tuset & Marques) at ODS/OIS.
- `semantic`: confusion-matrix mIoU and pixel accuracy, hierarchical mIoU.
"""
