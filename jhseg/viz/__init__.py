"""PNG pictures of hierarchies and their evaluation, drawn with matplotlib's Agg canvas.

Every figure is a `matplotlib.figure.Figure` on its own Agg canvas (no pyplot,
no global backend state), so pictures can be drawn from worker threads and
headless machines. Modules, one kind of picture each:

- `ucm`: ultrametric contour maps as images (interpixel or image resolution).
- `segments`: segment colourings, contour overlays, a hierarchy's levels side by side.
- `curves`: LRF/FDF curves like Fig. 5 of Lapertot, Chierchia, Perret.
- `grids`: image / target UCM / predicted UCM rows.
- `attention`: the clustering transformers' decoder attention painted back on the pixels.
- `pr_curve` (with the BSDS boundary benchmark): precision-recall curves with iso-F lines.
"""
