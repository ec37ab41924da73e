"""The method's equations (docs/method.md §1-§4): pure functions over tensors, no model, no files.

Only torch and the standard library are imported here (tests/test_layout.py checks it), so every
equation can be tested against an independent computation with made-up tensors.

- `prompts`: the compositional prompt ensemble: state words x templates -> prompt sentences (§1).
- `windows`: window index sets and coverage matrices on the patch grid (§2, Eq. 2-3).
- `crops`: the ten crops of multi-crop classification (§3); `tiling`: square tiles of non-square images (§2).
- `features`: encoded features of images (`Features`) and their one mapping to safetensors tensors.
- `zero_shot`: prototypes, ascore0 (Eq. 1), harmonic aggregation (Eq. 3), multi-scale fusion, upsampling.
- `few_shot`: reference memories and association (Eq. 4-6).
- `scorer`: the `Scorer`, which applies the equations with a configuration's `MethodOptions`.
"""
