"""Units projected back to pixels, made into display tiles (Zeiler & Fergus Fig. 2
quality): for each unit, one projection per mode and the image patch under it, all
cut to the same box (where the projections have their energy, inside the image)
and shown at the same size, each tile with its own contrast."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..backward import MODES
from ..errors import ZfcaffeError
from ..imaging import energy_box, patch_tile, projection_tile

#: display size of a tile in pixels (>= 96, whole-pixel enlargement below it)
TILE = 112


def parse_modes(text: str | list | tuple) -> list[str]:
    """'deconvnet,guided' -> ['deconvnet', 'guided'], each checked."""
    modes = [m.strip() for m in text.split(",") if m.strip()] if isinstance(text, str) else list(text)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ZfcaffeError(f"mode '{','.join(bad) or text}'; expected one or more of {', '.join(MODES)}, "
                           "separated by commas")
    return list(dict.fromkeys(modes))


@dataclasses.dataclass
class UnitTiles:
    projections: dict[str, np.ndarray]      # mode -> (units, TILE, TILE, 3) uint8
    patches: np.ndarray                     # (units, TILE, TILE, 3) uint8
    boxes: list[tuple[int, int, int, int]]  # (y0, y1, x0, x1) in the input, per unit
    near_ties: dict[str, set]               # pool layer -> windows decided by float rounding


def project_tiles(net, key: str, units: list[tuple], modes: list[str], image: np.ndarray,
                  size: int = TILE, boxes: list | None = None) -> UnitTiles:
    """Project units (0, c, y, x) or (0, c) of `key` (after net.forward of one image)
    in every mode; `image` is that input as (H, W, 1|3) in [0, 1]. Each unit's tiles are
    cut to the box where its projections have their energy, or to `boxes` when given
    (tiles of more modes that must line up with tiles made before)."""
    h, w = image.shape[:2]
    per_mode, ties = {}, {}
    for mode in modes:
        per_mode[mode] = net.project_many(key, units, mode=mode)
        for layer, windows in net.last_near_ties.items():
            ties.setdefault(layer, set()).update(windows)
    boxes = boxes or [energy_box([per_mode[m][i] for m in modes], h, w) for i in range(len(units))]
    projections = {m: np.stack([projection_tile(p, b, size) for p, b in zip(per_mode[m], boxes)])
                   for m in modes}
    patches = np.stack([patch_tile(image, b, size) for b in boxes])
    return UnitTiles(projections, patches, boxes, ties)


def near_tie_note(ties: dict[str, set]) -> str | None:
    """The report's note on projections that crossed max-pool near-ties."""
    if not ties:
        return None
    where = "; ".join(f"{layer}: {len(w)}" for layer, w in sorted(ties.items()))
    return ("Some projections pass through decisions taken by float rounding: max-pooling windows whose two "
            "largest inputs are equal up to rounding, rectifier inputs within rounding of zero "
            f"({where}); Caffe may have taken them the other way, so those projections are defined only "
            "up to rounding (net.last_near_ties lists them).")
