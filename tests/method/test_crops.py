"""Multi-crop (winclip.method.crops): AlexNet's ten crops, their mean score, and what they change."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms import TenCrop

from helpers import make_model, textured
from winclip.method.crops import crop_corners, crop_resize, ten_crops
from winclip.method.zero_shot import ascore0


def _normalised(model, img: Image.Image) -> torch.Tensor:
    """RGB → normalised tensor with the model's mean/std, no resizing (crops are already at size)."""
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(model.info.mean).view(3, 1, 1)) / torch.tensor(model.info.std).view(3, 1, 1)


def _ten_crop_score(model, img: Image.Image) -> float:
    """AlexNet's ten crops (four corners, centre, their mirror images) cut with PIL, each through open_clip's
    own encode_image one by one, ascore0 averaged."""
    size = model.info.image_size[0]
    big = img.resize((crop_resize(size),) * 2, Image.Resampling.BICUBIC)
    far = big.width - size
    centre = int(round(far / 2))
    corners = [(0, 0), (far, 0), (0, far), (far, far), (centre, centre)]
    crops = [big.crop((x, y, x + size, y + size)) for x, y in corners]
    crops += [ImageOps.mirror(c) for c in crops]
    with torch.no_grad():
        emb = torch.cat([model.clip.encode_image(_normalised(model, c)[None]) for c in crops])
    t_n, t_a = model.prototypes_
    return float(ascore0(emb, t_n, t_a, model.options.temperature).mean())


def test_crop_geometry_is_alexnets():
    """At ViT-B/16+'s 240 (274 → 240) the ten crops are torchvision's TenCrop (which mirrors the whole image
    first: the same crops whenever R − S is even)."""
    assert crop_resize(240) == 274 and crop_resize(224) == 256
    assert crop_corners(274, 240) == ((0, 0), (0, 34), (34, 0), (34, 34), (17, 17))
    view = torch.rand(3, 274, 274)
    ours = ten_crops(view, 240)
    theirs = torch.stack(TenCrop(240)(view))
    assert ours.shape == (10, 3, 240, 240)
    for crop in theirs:
        assert any(torch.equal(crop, c) for c in ours)
    with pytest.raises(ValueError, match="does not fit"):
        crop_corners(200, 240)


@pytest.mark.parametrize(("resized", "size"), [(274, 240), (256, 224), (229, 200), (35, 30)])
def test_the_mirrored_centre_crop_is_torchvisions_only_where_the_margin_is_even(resized, size):
    """What the docstring says: torchvision mirrors the image, then crops; the order of the mirrored corners
    differs, and its mirrored centre is one pixel to the right of ours where R − S is odd."""
    view = torch.rand(3, resized, resized)
    ours, theirs = ten_crops(view, size), torch.stack(TenCrop(size)(view))
    assert torch.equal(ours[:5], theirs[:5])
    assert torch.equal(ours[5:9], theirs[[6, 5, 8, 7]])  # torchvision: the mirrored image's top-left first
    far = resized - size
    c = int(round(far / 2))
    assert torch.equal(ours[9], view[:, c : c + size, c : c + size].flip(-1))
    assert torch.equal(theirs[9], view[:, c : c + size, far - c : far - c + size].flip(-1))
    assert torch.equal(ours[9], theirs[9]) == (far % 2 == 0)
    assert far - c == c + far % 2  # odd margin: torchvision's mirrored centre is 1 px to the right


@pytest.mark.parametrize("fused", [True, False])
def test_multi_crop_score_is_the_mean_over_ten_crops_through_open_clip(rng, fused):
    model = make_model(multi_crop=True)
    if not fused:
        model = type(model)(model.backbone.unfused(), None, multi_crop=True, device="cpu")
    model.set_object("bottle")
    images = [Image.fromarray(textured(rng, 50, 70)), Image.fromarray(textured(rng, 64, 64))]
    pred = model.predict(images)
    for i, img in enumerate(images):
        expected = _ten_crop_score(model, img)
        assert float(pred.scores[i]) == pytest.approx(expected, abs=1e-5)
        assert float(pred.zero_shot[i]) == pytest.approx(expected, abs=1e-5)


def test_multi_crop_changes_the_image_score_only(rng):
    """Maps keep the full view (with its image-scale term); Eq. 6 takes the ten-crop score."""
    images = [Image.fromarray(textured(rng, 64, 64)) for _ in range(3)]
    refs = [Image.fromarray(textured(rng, 64, 64)) for _ in range(2)]
    plain = make_model().set_object("bottle").fit(refs)
    multi = make_model(multi_crop=True).set_object("bottle").fit(refs)
    a, b = plain.predict(images), multi.predict(images)
    for m1, m2 in zip(a.maps, b.maps, strict=True):
        torch.testing.assert_close(m1, m2, rtol=0, atol=0)
    plain.fit(None)
    full_view = plain.predict(images).scores
    crops = torch.tensor([_ten_crop_score(multi, img) for img in images])
    torch.testing.assert_close(b.scores - a.scores, 0.5 * (crops - full_view), rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="not a tensor"):
        multi.predict(torch.zeros(1, 3, 64, 64))
