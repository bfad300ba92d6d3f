"""Built-in class-name sets and their automatic choice by class count."""
import numpy as np
import pytest

from zfcaffe.errors import ZfcaffeError
from zfcaffe.labels import BUILT_IN, built_in, resolve_labels


@pytest.mark.parametrize("classes, first, last, what", [
    (1000, "tench", "toilet tissue", "ILSVRC-2012"), (10, "airplane", "truck", "CIFAR-10"),
    (21, "background", "tvmonitor", "PASCAL VOC"), (20, "aeroplane", "tvmonitor", "without background"),
    (81, "background", "toothbrush", "COCO"), (80, "person", "toothbrush", "without background"),
    (19, "road", "bicycle", "Cityscapes"), (150, "wall", "flag", "ADE20K")])
def test_automatic_choice(classes, first, last, what):
    labels = resolve_labels(None, classes)
    assert len(labels.names) == classes
    assert (labels.names[0], labels.names[-1]) == (first, last)
    assert what in labels.source and f"{classes} classes" in labels.source


@pytest.mark.parametrize("classes, channels", [(2, 3), (7, 3), (21, 1), (10, 1)])
def test_other_counts_are_indices(classes, channels):
    labels = resolve_labels(None, classes, channels)
    assert labels.names == [] and labels(3) == "class 3"


def test_named_sets_with_and_without_background():
    assert resolve_labels("face", 2).names == ["background", "face"]
    assert resolve_labels("face", 1).names == ["face"]
    assert resolve_labels("coco", 81).names[:3] == ["background", "person", "bicycle"]
    assert resolve_labels("coco", 80).names[:2] == ["person", "bicycle"]
    assert resolve_labels("voc", 20).names[0] == "aeroplane"
    assert resolve_labels("cityscapes", 19).names[11] == "person"
    assert resolve_labels("ade20k", 150).names[12] == "person"
    assert "--labels voc" in resolve_labels("voc", 21).source
    with pytest.raises(ZfcaffeError, match="21 class names, but the class output has 19"):
        resolve_labels("voc", 19)


def test_every_set_loads_and_names_are_unique():
    for name in BUILT_IN:
        names = built_in(name).names
        # ImageNet's short names repeat (two "crane"s, two "maillot"s): its synsets differ
        assert names and (name == "imagenet" or len(set(names)) == len(names)), name


def test_palettes():
    from zfcaffe.viz.palettes import ADE20K, CITYSCAPES, VOC, palette_for, voc_colormap
    assert VOC.shape == (21, 3) and CITYSCAPES.shape == (19, 3) and ADE20K.shape == (150, 3)
    assert VOC.dtype == CITYSCAPES.dtype == ADE20K.dtype == np.uint8
    assert VOC[:3].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]] and VOC[15].tolist() == [192, 128, 128]
    assert CITYSCAPES[0].tolist() == [128, 64, 128] and CITYSCAPES[18].tolist() == [119, 11, 32]
    assert ADE20K[0].tolist() == [120, 120, 120] and ADE20K[149].tolist() == [92, 0, 255]
    assert (palette_for(21) == VOC).all() and (palette_for(19) == CITYSCAPES).all()
    assert (palette_for(150, resolve_labels(None, 150).names) == ADE20K).all()
    assert (palette_for(20, resolve_labels(None, 20).names) == VOC[1:]).all()     # VOC without background
    assert (palette_for(19, ["a", "b", "c"]) == voc_colormap(19)).all()           # names say: not Cityscapes
    other = palette_for(300)
    assert other.shape == (300, 3) and len({tuple(c) for c in other[:256]}) == 256
