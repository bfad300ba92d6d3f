"""Linear probes: how well a linear classifier on each layer's codes predicts the
labels (the paper's Sec. 5 question "how generic are the features of each layer",
asked of any Caffe model and any labelled image set)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ZfcaffeError
from ..extras import require


@dataclasses.dataclass
class ProbeResult:
    layer: str
    size: int                 # code dimensions
    accuracy: float           # mean over the folds
    std: float
    folds: np.ndarray         # accuracy of each fold
    chance: float             # the most frequent class's share: what always guessing it scores


def probe(layer: str, codes: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0,
          c: float = 1.0) -> ProbeResult:
    """Cross-validated (stratified, shuffled with `seed`) logistic regression on
    standardised codes."""
    require("sklearn", "zfcaffe probe")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise ZfcaffeError(f"a probe needs at least 2 classes; the labels hold {len(classes)}")
    folds = min(folds, int(counts.min()))
    if folds < 2:
        raise ZfcaffeError(f"class {classes[counts.argmin()]} has {counts.min()} image(s); cross-validation "
                           "needs at least 2 of every class")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    scores = cross_val_score(model, codes, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return ProbeResult(layer, codes.shape[1], float(scores.mean()), float(scores.std()), scores,
                       float(counts.max() / counts.sum()))
