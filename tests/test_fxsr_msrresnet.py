"""fxsr_msrresnet (the bundled fxsr-nat-x4's arch) and the fxsr_nat method's start: started from an MSRResNet it
*is* that MSRResNet for every t; a painted t map changes the output only within the receptive field of the paint."""

from __future__ import annotations

import pytest
import torch

from perceptsr.archs.fxsr_msrresnet import FxMSRResNet, FxMSRResNetConfig
from perceptsr.archs.srresnet import MSRResNet, MSRResNetConfig
from perceptsr.methods.fxsr_nat import FxSRNat, FxSRNatConfig

BLOCKS = 2


def tiny() -> FxMSRResNet:
    torch.manual_seed(0)
    return FxMSRResNet(FxMSRResNetConfig(scale=4, num_feat=8, num_block=BLOCKS, cond_feat=4)).eval()


def test_started_from_an_msrresnet_it_equals_it_for_every_t() -> None:
    torch.manual_seed(1)
    source = MSRResNet(MSRResNetConfig(scale=4, num_feat=8, num_block=BLOCKS)).eval()
    method = FxSRNat(FxSRNatConfig(generator=FxMSRResNetConfig(scale=4, num_feat=8, num_block=BLOCKS, cond_feat=4)))
    method.init_generator(source.state_dict())
    lr = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        expected = source(lr)
        for t in (0.0, 1.0, torch.rand(1, 1, 12, 10)):
            assert torch.equal(method.generator.eval()(lr, t=t), expected)


def test_a_painted_t_map_changes_only_the_painted_region_and_its_receptive_field() -> None:
    model = tiny()
    with torch.no_grad():  # a trained-looking net: conditions that matter (fresh SFT layers move little)
        for name, param in model.named_parameters():
            if "SFT_shift_conv1" in name or name.startswith(("upconv", "conv_hr", "conv_last")):
                param.mul_(20)
    lr = torch.rand(1, 3, 40, 40)
    t = torch.zeros(1, 1, 40, 40)
    painted = t.clone()
    painted[..., 18:22, 18:22] = 1.0
    with torch.no_grad():
        difference = (model(lr, t=painted) - model(lr, t=t)).abs().amax(dim=(0, 1))
    # a uniform t takes a one-pixel shortcut (archs.fxsr._t_map): outside the paint the two differ by rounding only
    changed = difference > 1e-4 * difference.max()
    # LR receptive radius: conv_first 1, 2 per block, upconv1 1, then three HR-side 3x3 convs (under 1 LR pixel)
    radius = (1 + 2 * BLOCKS + 1 + 1) * 4
    rows, cols = changed.nonzero(as_tuple=True)
    assert changed[18 * 4:22 * 4, 18 * 4:22 * 4].all()
    assert rows.min() >= 18 * 4 - radius and rows.max() < 22 * 4 + radius
    assert cols.min() >= 18 * 4 - radius and cols.max() < 22 * 4 + radius
    assert not changed[:18 * 4 - radius].any() and not changed[:, 22 * 4 + radius:].any()


def test_the_teacher_moves_the_l1_target_with_t_and_is_not_saved(tmp_path) -> None:
    """With `teacher`, L1's target is (1 − s·t)·HR + s·t·teacher(LR), per pixel for a t map: at t = 0 the plain L1 to
    HR, at t = 1 mostly the teacher's SR; the teacher is no part of the method's weights (checkpoints stay the run's
    own)."""
    from safetensors.torch import save_file

    from perceptsr.archs.natsr import NMD, NMDConfig
    from perceptsr.losses.weighted import fit_weight
    from perceptsr.methods.base import Batch
    from perceptsr.zoo.release import save_release

    torch.manual_seed(2)
    teacher = MSRResNet(MSRResNetConfig(scale=4, num_feat=8, num_block=1)).eval()
    save_release(tmp_path / "teacher.safetensors", arch="msrresnet", config=teacher.config,
                 state_dict=teacher.state_dict())
    save_file(NMD(NMDConfig(num_feat=4)).state_dict(), str(tmp_path / "nmd.safetensors"))
    config = FxSRNatConfig(generator=FxMSRResNetConfig(scale=4, num_feat=8, num_block=BLOCKS, cond_feat=4),
                           nmd=NMDConfig(num_feat=4), nmd_init=str(tmp_path / "nmd.safetensors"),
                           teacher=str(tmp_path / "teacher.safetensors"), teacher_share=0.75)
    method = FxSRNat(config)
    method.build_losses()
    assert not any(key.startswith("teacher") for key in method.state_dict())
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    sr = method.generator(lr, t=torch.zeros(2, 1, 8, 8))
    with torch.no_grad():
        target = teacher(lr).clamp(0, 1)
    for level in (0.0, 1.0):
        batch = Batch(lr, hr, {"t": torch.full((2, 1, 8, 8), level)})
        losses = method.generator_losses(batch, sr, "gan")
        share = 0.75 * level
        torch.testing.assert_close(losses["l1"], (sr - (1 - share) * hr - share * target).abs().mean())
    left_half = torch.zeros(2, 1, 8, 8)  # t = 1 on the left half: the teacher's target there, HR's on the right
    left_half[..., :4] = 1
    losses = method.generator_losses(Batch(lr, hr, {"t": left_half}), sr, "gan")
    share = fit_weight(0.75 * left_half, (32, 32))
    assert float(share[..., :12].min()) == 0.75 and float(share[..., 20:].max()) == 0.0  # smooth only near the edge
    torch.testing.assert_close(losses["l1"], (sr - (1 - share) * hr - share * target).abs().mean())


# --- the bundled controllable model ------------------------------------------------------------------------------


def test_bundled_fxsr_nat_x4_moves_from_the_psnr_model_to_a_natural_one(shared: callable) -> None:
    """Issue 19's bars, on a budget: at t = 0 within 0.3 dB of srresnet-x4 on Set5; on BSD100's first 10 images t = 1
    is clearly more natural than t = 0 (NIQE) within 1.5 dB of srresnet-x4, and PSNR falls with t. NIQE is not
    asserted monotone: t = 0.5 scores about as t = 0, as pixel blends of the two ends do (the model card)."""
    from perceptsr.conditions import ConditionOptions
    from perceptsr.evaluation.evaluate import evaluate
    from perceptsr.zoo.models import bundled_path, load_model

    set5, bsd100 = shared("data/Set5"), shared("data/BSD100")
    if bundled_path("fxsr-nat-x4") is None or bundled_path("srresnet-x4") is None:
        pytest.skip("the bundled models are not installed in this copy")
    model, psnr_model = load_model("fxsr-nat-x4"), load_model("srresnet-x4")

    def score(network: torch.nn.Module, folder, t: float | None, metrics: tuple[str, ...], **kw) -> dict[str, float]:
        given = None if t is None else ConditionOptions(t=t)
        return evaluate(network, folder, scale=4, metrics=metrics, conditions=given, progress=False, **kw).mean

    assert score(model, set5, 0.0, ("psnr",))["psnr"] > score(psnr_model, set5, None, ("psnr",))["psnr"] - 0.3
    ends = {t: score(model, bsd100, t, ("psnr", "niqe"), max_images=10) for t in (0.0, 0.5, 1.0)}
    reference = score(psnr_model, bsd100, None, ("psnr",), max_images=10)
    assert ends[1.0]["niqe"] < ends[0.0]["niqe"] - 0.5, ends
    assert ends[1.0]["psnr"] > reference["psnr"] - 1.5, (ends, reference)
    assert ends[1.0]["psnr"] < ends[0.5]["psnr"] < ends[0.0]["psnr"], ends
    assert ends[1.0]["niqe"] < ends[0.5]["niqe"] - 0.5, ends
