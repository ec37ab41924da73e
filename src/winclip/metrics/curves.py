"""Curve points for plots, streamed with bounded memory; the metrics are never computed from thinned points.

A ROC or PRO curve of every pixel of a class has up to one point per pixel. ``CurveThinner``
keeps, of a curve fed in pieces, the first and the last point of every run of points that fall
in one cell of a ``cells`` × ``cells`` grid over ``[0, x_max] × [0, 1]``. Both coordinates only
grow along these curves, so a run never comes back to a cell: at most ``2 · (2 · cells + 1)``
points (plus one per piece) are kept, and the polyline through them differs from the full one
only inside single cells. Its trapezoid area therefore differs from the exact area by at most
``x_max / cells`` (the sum over runs of width × height, each height at most ``1 / cells``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PLOT_CELLS = 500  # grid cells per axis of plotted pixel curves: about 2,000 points, area within 1/500


@dataclass(frozen=True)
class Curve:
    """Points of a curve in plotting order: x (P,), y (P,) float64, from its start point."""

    x: np.ndarray
    y: np.ndarray


class CurveThinner:
    """Collects a curve whose x and y never decrease, fed piece by piece; ``cells=None`` keeps every point."""

    def __init__(self, cells: int | None, x_max: float = 1.0) -> None:
        if cells is not None and cells < 1:
            raise ValueError(f"cells must be >= 1, got {cells}")
        self.cells = cells
        self.x_max = x_max
        self._x: list[np.ndarray] = [np.zeros(1)]  # every curve here starts at (0, 0)
        self._y: list[np.ndarray] = [np.zeros(1)]
        self._cell = 0  # grid key of the last point fed

    def feed(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add the next points x (G,), y (G,); the last point of a piece is always kept."""
        if x.size == 0:
            return
        if self.cells is None:
            keep = np.ones(x.size, dtype=bool)
        else:
            # floor(x) + floor(y) on the grid: equal for consecutive points exactly when they share a cell
            cell = np.floor(x / self.x_max * self.cells).astype(np.int64) + np.floor(y * self.cells).astype(np.int64)
            before = np.concatenate(([self._cell], cell[:-1]))
            after = np.concatenate((cell[1:], [-1]))
            keep = (cell != before) | (cell != after)
            self._cell = int(cell[-1])
        self._x.append(np.asarray(x, dtype=np.float64)[keep])
        self._y.append(np.asarray(y, dtype=np.float64)[keep])

    def curve(self) -> Curve:
        return Curve(np.concatenate(self._x), np.concatenate(self._y))
