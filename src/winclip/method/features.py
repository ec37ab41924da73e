"""Encoded features of images (docs/method.md §2) and their one mapping to and from safetensors tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Features:
    """Features of N preprocessed views (docs/method.md §2).

    image `(N, D)` = F^I; windows {k: `(N, W_k, D)`} = F^W_k; patches `(N, L, C)` = F^P;
    crops `(N, 10, D)`: F^I of each view's ten crops (multi-crop, docs/method.md §3), or None.
    Embeddings are as the model outputs them (not normalised).
    """

    image: torch.Tensor
    windows: dict[int, torch.Tensor]
    patches: torch.Tensor
    crops: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.image.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Features:
        """The same features on another device (and dtype)."""
        return Features(
            self.image.to(device, dtype),
            {k: v.to(device, dtype) for k, v in self.windows.items()},
            self.patches.to(device, dtype),
            None if self.crops is None else self.crops.to(device, dtype),
        )

    def __getitem__(self, sel: slice | torch.Tensor | list[int]) -> Features:
        """Features of a subset of the views."""
        return Features(
            self.image[sel],
            {k: v[sel] for k, v in self.windows.items()},
            self.patches[sel],
            None if self.crops is None else self.crops[sel],
        )

    def with_crops(self, crops: torch.Tensor | None) -> Features:
        """The same features with these crop embeddings `(N, 10, D)` (None drops them)."""
        if crops is not None and crops.shape[0] != len(self):
            raise ValueError(f"{crops.shape[0]} crop sets for {len(self)} views")
        return Features(self.image, self.windows, self.patches, crops)

    @staticmethod
    def cat(parts: list[Features]) -> Features:
        """Concatenate along the view axis (crops kept only when every part has them)."""
        if not parts:
            raise ValueError("Features.cat needs at least one part")
        crops_parts = [p.crops for p in parts if p.crops is not None]
        crops = torch.cat(crops_parts) if len(crops_parts) == len(parts) else None
        return Features(
            torch.cat([p.image for p in parts]),
            {k: torch.cat([p.windows[k] for p in parts]) for k in parts[0].windows},
            torch.cat([p.patches for p in parts]),
            crops,
        )

    def to_tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Named fp32 CPU tensors for safetensors: `<prefix>image`, `<prefix>patches`, `<prefix>windows.<k>`
        and `<prefix>crops` when present."""
        named = {f"{prefix}image": self.image, f"{prefix}patches": self.patches}
        named.update({f"{prefix}windows.{k}": v for k, v in self.windows.items()})
        if self.crops is not None:
            named[f"{prefix}crops"] = self.crops
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in named.items()}

    @staticmethod
    def from_tensors(tensors: dict[str, torch.Tensor], prefix: str = "") -> Features | None:
        """The inverse of `to_tensors`; None when `<prefix>image` is absent. Window scales come back sorted."""
        if f"{prefix}image" not in tensors:
            return None
        head = f"{prefix}windows."
        windows = {int(k[len(head) :]): v for k, v in tensors.items() if k.startswith(head)}
        return Features(
            tensors[f"{prefix}image"],
            dict(sorted(windows.items())),
            tensors[f"{prefix}patches"],
            tensors.get(f"{prefix}crops"),
        )
