"""Batch jobs on a Ray cluster: `winclip predict --ray` and `winclip eval --ray`.

- `pool`: connecting to a cluster and a pool of Ray actors that runs chunks of inputs with retries.
- `workers`: what runs inside the actors (the inspector or the encoder, built once per actor).
- `predict`: the driver of `predict --ray`: chunks out, outcomes back, written by `ResultWriter`.
- `encode`: the encoder `evaluate(..., encoder=...)` calls in place of `feature_cache.encode_files`.

Ray is an optional extra (`pip install "winclip-anomaly[ray]"`) and is imported only by functions that
need it, never by importing these modules.
"""
