"""Reproducing the paper: evaluation runs, its tables, its baselines and the reports (`winclip eval`, `report`).

- `data/`: the dataset layouts (MVTec-AD, VisA, a folder, BTAD, MPDD, MVTec LOCO, Real-IAD, a CSV manifest).
- `protocol`: which runs a dataset gives and how maps and masks are brought to the evaluation resolution.
- `feature_cache`: encoded features per image content; `evaluate`: resumable evaluation runs over it.
- `results`: results.csv, scores.npz and summary.md; `run_record`: what a later report needs;
  `report/`: report.html (`collect` gathers, `page` draws).
- `tables` and `reproduce`: the paper's tables as data, and `winclip eval --table N`; `baselines`: its baselines.
"""
