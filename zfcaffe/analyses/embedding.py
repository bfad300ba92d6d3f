"""A 2-D map of feature codes (t-SNE), as the survey's figure of a net's feature space."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ZfcaffeError
from ..extras import require


@dataclasses.dataclass
class Embedding:
    coords: np.ndarray        # (n, 2)
    rows: np.ndarray          # (n,) the rows of the features that were embedded
    method: str               # what computed it, said in the figure


def tsne(codes: np.ndarray, perplexity: float = 30.0, max_points: int = 20000, seed: int = 0,
         threads: int = 2) -> Embedding:
    """t-SNE of the rows of `codes` (a seeded sample of max_points where there are more),
    after PCA to 50 dimensions. openTSNE (Barnes-Hut for small sets, FFT interpolation
    for large ones, chosen by size) where installed, else scikit-learn's."""
    n = len(codes)
    if n < 4:
        raise ZfcaffeError(f"t-SNE needs at least 4 images; the features hold {n}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, max_points, replace=False)) if n > max_points else np.arange(n)
    x = np.asarray(codes[rows], np.float64)
    x = x - x.mean(axis=0)
    if x.shape[1] > 50:
        # PCA to 50 dimensions (the usual first step) through the SVD: deterministic
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        x = u[:, :50] * s[:50]
    scale = np.abs(x).max()
    x = x / scale if scale > 0 else x
    perplexity = min(perplexity, (len(rows) - 1) / 3)
    try:
        import openTSNE
        result = openTSNE.TSNE(perplexity=perplexity, random_state=seed, n_jobs=threads,
                               negative_gradient_method="auto", verbose=False).fit(x)
        return Embedding(np.asarray(result, np.float32), rows, f"openTSNE {openTSNE.__version__}")
    except ImportError:
        pass
    manifold = require("sklearn.manifold", "zfcaffe tsne")
    coords = manifold.TSNE(perplexity=perplexity, random_state=seed, init="pca", n_jobs=threads).fit_transform(x)
    import sklearn
    return Embedding(coords.astype(np.float32), rows, f"scikit-learn {sklearn.__version__} TSNE")
