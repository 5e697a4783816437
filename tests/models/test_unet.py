import keras
import numpy as np
import pytest

from tfcourse import UserError
from tfcourse.models.backbones import build_backbone
from tfcourse.models.unet import build_unet, encoder_feature_maps


def test_unet_joins_the_encoder_at_every_stride_and_answers_at_full_resolution(tmp_path):
    backbone = build_backbone("mobilenet_v2", "random", 64, width_multiplier=0.35)
    maps = encoder_feature_maps(backbone, "mobilenet_v2")
    assert [tuple(o.shape[1:3]) for o in maps.outputs] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    unet = build_unet(backbone, "mobilenet_v2", 64)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype("uint8")
    logits = unet.predict(images, verbose=0)
    assert logits.shape == (2, 64, 64) and np.isfinite(logits).all() and logits.std() > 0
    unet.save(tmp_path / "unet.keras")
    reloaded = keras.models.load_model(tmp_path / "unet.keras", compile=False)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), logits, atol=1e-5)


def test_unet_refuses_sizes_it_cannot_halve_five_times():
    backbone = build_backbone("mobilenet_v2", "random", 80, width_multiplier=0.35)
    with pytest.raises(UserError, match="multiple of 32"):
        build_unet(backbone, "mobilenet_v2", 80)
