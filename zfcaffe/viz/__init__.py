"""Figures (matplotlib PNGs) and the static HTML report. The array-level pieces
(tiling, patches) live in zfcaffe.imaging and are re-exported here."""
from ..imaging import activation_tiles, filter_tiles, normalize, tile_blocks, vis_square

__all__ = ["activation_tiles", "filter_tiles", "normalize", "tile_blocks", "vis_square"]
