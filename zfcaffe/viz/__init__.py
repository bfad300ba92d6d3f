"""Pictures of a net: tiles of filters and activations, figures and the HTML report."""
from .tiling import activation_tiles, filter_tiles, normalize, vis_square

__all__ = ["activation_tiles", "filter_tiles", "normalize", "vis_square"]
