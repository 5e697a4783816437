import keras
import numpy as np
import pytest

from tfcourse import UserError
from tfcourse.hub import HubModule
from tfcourse.models.backbones import SCRATCH_BATCH_NORM_MOMENTUM, build_backbone
from tfcourse.models.classifier import build_classifier


def test_fine_tune_top_unfreezes_top_layers_but_not_batch_norm():
    backbone = build_backbone("mobilenet_v2", "random", 64, width_multiplier=0.35)
    backbone.features.trainable = False
    backbone.fine_tune_top(12)
    layers = backbone.features.layers
    assert not any(layer.trainable for layer in layers[:-12] if layer.weights)
    top = [layer for layer in layers[-12:] if layer.weights]
    assert any(layer.trainable for layer in top)
    assert all(not layer.trainable for layer in top if isinstance(layer, keras.layers.BatchNormalization))


def test_random_backbone_uses_fast_batch_norm_statistics():
    backbone = build_backbone("mobilenet_v2", "random", 64, width_multiplier=0.35)
    assert backbone.pretrained is False
    momenta = {l.momentum for l in backbone.features.layers if isinstance(l, keras.layers.BatchNormalization)}
    assert momenta == {SCRATCH_BATCH_NORM_MOMENTUM}


def test_hub_backbone_classifier_takes_uint8_and_fine_tunes_whole(hub_module_dir):
    backbone = build_backbone("efficientnet_b0", "hub", 32, hub_handle=hub_module_dir)
    assert backbone.source == f"hub:{hub_module_dir}" and isinstance(backbone.features, HubModule)
    model = build_classifier(backbone, 3, 32)
    assert model.input.dtype == "uint8"
    probabilities = model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    assert not backbone.features.trainable
    backbone.fine_tune_top(5)
    assert backbone.features.trainable and len(backbone.features.trainable_weights) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "resnet50", "source": "random"}, "Unknown backbone"),
        ({"name": "mobilenet_v2", "source": "weights.bin"}, "not a weights source"),
        ({"name": "mobilenet_v2", "source": "/missing/model.tflite"}, "does not exist"),
        ({"name": "efficientnet_b0", "source": "x.tflite"}, "only into mobilenet_v2"),
        ({"name": "mobilenet_v2", "source": "imagenet", "width_multiplier": 0.5}, "width_multiplier"),
    ],
)
def test_bad_sources_are_refused(kwargs, message):
    with pytest.raises(UserError, match=message):
        build_backbone(image_size=64, **kwargs)
