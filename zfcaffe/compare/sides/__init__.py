"""The other side of a comparison. Each side runs (or reads) its values and maps them
to zfcaffe's keys (layer names, `name#i`), saying for each how it was matched:

    side.values(net, inputs, ours) -> {key: Match}

`ours` is zfcaffe's value of every key (for sides that match by correlation)."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Match:
    value: np.ndarray
    name: str          # the other side's name for the value
    how: str           # how the name was matched to the Caffe key


class Side:
    #: what the report calls the other side
    description = "the other side"
    #: whether the side can run again on another input (the channel-order and mean checks)
    reruns = True

    def values(self, net, inputs: dict, ours: dict) -> dict[str, Match]:
        raise NotImplementedError

    def notes(self) -> list[str]:
        return []
