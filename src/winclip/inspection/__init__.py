"""Inspecting a product line's photos with a profile: what `winclip profile` and `winclip predict` do.

- `profile`: the `Profile` record (model identity, prompts, prototypes, references, ROI, thresholds);
  `store`: its folder on disk (atomic saves); `checks`: checks of a folder's raw content before loading;
  `references`: encoding a profile's good photos once, and its ROI mask.
- `decisions`: labels, confidence, ROI and regions of one result; `calibration`: thresholds from held-out photos.
- `inspector`: the `Inspector`, which streams a profile's `Inspection` results over images.
- `render`: pictures of a result (the threshold-anchored colour scale, overlays, masks).
- `folder_run`: `winclip predict`'s run over files and folders, and the writer of its outputs.
"""
