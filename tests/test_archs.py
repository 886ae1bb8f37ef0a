"""Every ARCHS entry at every scale, the discriminators, and virtual batch norm."""

from __future__ import annotations

import pytest
import torch
from tolerance import assert_paths_close, network_depth
from torch.nn import functional as F  # noqa: N812

from perceptsr.archs import ARCHS
from perceptsr.archs.blocks import PixelShuffleUpsampler, VirtualBatchNorm2d
from perceptsr.archs.discriminators import (
    SRGANDiscriminator,
    SRGANDiscriminatorConfig,
    VGGStyleDiscriminator,
    VGGStyleDiscriminatorConfig,
)
from perceptsr.archs.srresnet import SRResNet, SRResNetConfig
from perceptsr.config import from_dict, to_dict
from perceptsr.errors import ConfigError, InputError
from perceptsr.zoo.release import load_release, read_release, save_release

CASES = [(name, scale) for name, spec in ARCHS.items() for scale in spec.scales]


CONDITION_CHANNELS = {"seg": 8, "t": 1}  # SFTGAN's 8-class probabilities, FxSR's style map


def _build(name: str, scale: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return ARCHS[name].module(ARCHS[name].tiny(scale))


def _conditions(model: torch.nn.Module, n: int, h: int, w: int) -> dict[str, torch.Tensor]:
    """Random condition maps of the sizes the model declares (probabilities for seg, [0,1] for t)."""
    out = {}
    for key, factor in model.condition_scales.items():
        value = torch.rand(n, CONDITION_CHANNELS[key], h * factor, w * factor)
        out[key] = value / value.sum(1, keepdim=True) if key == "seg" else value
    return out


@pytest.mark.parametrize(("name", "scale"), CASES)
def test_shape_and_gradients(name: str, scale: int) -> None:
    model = _build(name, scale)
    assert model.scale == scale and model.config.scale == scale
    assert set(model.condition_scales) <= set(CONDITION_CHANNELS)
    lr = torch.rand(2, 3, 7, 9, requires_grad=True)
    sr = model(lr, **_conditions(model, 2, 7, 9))
    assert sr.shape == (2, 3, 7 * scale, 9 * scale)
    assert torch.isfinite(sr).all() and sr.std() > 0
    sr.square().mean().backward()
    assert lr.grad is not None and torch.isfinite(lr.grad).all() and lr.grad.abs().sum() > 0
    for param in model.parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all()


@pytest.mark.parametrize(("name", "scale"), CASES)
def test_release_round_trip(name: str, scale: int, tmp_path) -> None:
    model = _build(name, scale).eval()
    with torch.no_grad():  # move weights away from their init, so a load that failed would show
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    path = tmp_path / f"{name}_x{scale}.safetensors"
    save_release(path, arch=name, config=model.config, state_dict=model.state_dict())
    assert read_release(path).config == model.config
    loaded = load_release(path)
    lr = torch.rand(1, 3, 7, 9)
    conditions = _conditions(model, 1, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lr, **conditions), model(lr, **conditions), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(ARCHS))
def test_config_round_trips_and_rejects_bad_scale(name: str) -> None:
    config = ARCHS[name].config()
    assert from_dict(ARCHS[name].config, to_dict(config)) == config
    with pytest.raises(ConfigError):
        ARCHS[name].config(scale=5)


def test_bicubic_keeps_constants() -> None:
    model = _build("bicubic", 4)
    lr = torch.full((1, 3, 5, 6), 0.37)
    torch.testing.assert_close(model(lr), torch.full((1, 3, 20, 24), 0.37), rtol=0, atol=1e-6)


def test_srresnet_output_range_mapping() -> None:
    torch.manual_seed(0)
    signed = SRResNet(SRResNetConfig(scale=2, num_feat=8, num_block=1))
    unit = SRResNet(SRResNetConfig(scale=2, num_feat=8, num_block=1, output_range="unit"))
    unit.load_state_dict(signed.state_dict())
    lr = torch.rand(1, 3, 5, 5)
    with torch.no_grad():  # the same convs, then x -> (x + 1) / 2: one rounding more
        assert_paths_close(signed(lr), (unit(lr) + 1) / 2, depth=2, what="signed vs unit range")


def test_pixel_shuffle_upsampler_layout() -> None:
    up = PixelShuffleUpsampler(4, 8, torch.nn.ReLU)
    assert [k for k in up.state_dict() if k.endswith("weight")] == ["0.weight", "3.weight", "6.weight"]
    assert up(torch.rand(1, 4, 3, 2)).shape == (1, 4, 24, 16)
    with pytest.raises(ValueError):
        PixelShuffleUpsampler(4, 6, torch.nn.ReLU)


@pytest.mark.parametrize("input_size", [128, 256])
def test_vgg_style_discriminator_shapes(input_size: int) -> None:
    torch.manual_seed(0)
    model = VGGStyleDiscriminator(VGGStyleDiscriminatorConfig(num_feat=4, input_size=input_size))
    out = model(torch.rand(2, 3, input_size, input_size))
    assert out.shape == (2, 1) and torch.isfinite(out).all()
    with pytest.raises(InputError):
        model(torch.rand(2, 3, 96, 96))


@pytest.mark.parametrize("norm", ["batch", "virtual", "none"])
@pytest.mark.parametrize(("head", "size"), [("dense", 24), ("conv", 20)])
def test_srgan_discriminator_shapes(norm: str, head: str, size: int) -> None:
    torch.manual_seed(0)
    config = SRGANDiscriminatorConfig(num_feat=4, input_size=24, norm=norm, head=head, dense_features=16)
    model = SRGANDiscriminator(config)
    if norm == "virtual":
        model.set_reference(torch.rand(3, 3, size, size))
    x = torch.rand(2, 3, size, size, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 1) and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    if head == "dense":
        with pytest.raises(InputError):
            model(torch.rand(2, 3, 32, 32))


def test_srgan_discriminator_paper_flatten() -> None:
    model = SRGANDiscriminator(SRGANDiscriminatorConfig())
    assert model.linear1.in_features == 512 * 6 * 6  # 96 -> 48 -> 24 -> 12 -> 6


def _vbn_disc() -> SRGANDiscriminator:
    torch.manual_seed(0)
    config = SRGANDiscriminatorConfig(num_feat=4, input_size=16, norm="virtual", dense_features=8)
    return SRGANDiscriminator(config)


def test_virtual_bn_needs_a_reference() -> None:
    with pytest.raises(RuntimeError, match="set_reference"):
        _vbn_disc()(torch.rand(2, 3, 16, 16))
    with pytest.raises(ConfigError):
        SRGANDiscriminator(SRGANDiscriminatorConfig(input_size=16)).set_reference(torch.rand(2, 3, 16, 16))


def test_virtual_bn_output_is_per_example_and_follows_the_reference() -> None:
    model = _vbn_disc()
    model.set_reference(torch.rand(4, 3, 16, 16))
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
        other_batch = model(torch.cat([x[:1], torch.rand(5, 3, 16, 16)]))[:1]
        depth = network_depth(model)  # batch size changes the kernels, so per-example outputs round differently
        tolerance = assert_paths_close(together, alone, depth=depth, what="batch vs one at a time")
        assert_paths_close(other_batch, together[:1], depth=depth, what="other batch mates")
        model.set_reference(torch.rand(4, 3, 16, 16) * 0.5)
        assert (model(x) - together).abs().max() > 100 * tolerance


def test_virtual_bn_statistics() -> None:
    torch.manual_seed(0)
    vbn = VirtualBatchNorm2d(2)
    ref, x = torch.randn(3, 2, 4, 4) * 2 + 1, torch.randn(1, 2, 4, 4)
    out = vbn(torch.cat([ref, x]), num_ref=3)
    ref_expected = F.batch_norm(ref, None, None, training=True, eps=1e-5)
    depth = ref.numel() // 2  # mean and variance sum over every value of a channel
    assert_paths_close(out[:3], ref_expected, depth=depth, what="reference rows vs batch_norm")
    mixed = torch.cat([ref, x])  # {example} ∪ reference statistics, per channel
    expected = (x - mixed.mean(dim=(0, 2, 3), keepdim=True)) / torch.sqrt(
        mixed.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + 1e-5
    )
    tolerance = assert_paths_close(out[3:], expected, depth=depth, what="example vs mixed statistics")
    alone = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / torch.sqrt(x.var(dim=(0, 2, 3), unbiased=False,
                                                                       keepdim=True) + 1e-5)
    assert (out[3:] - alone).abs().max() > 100 * tolerance  # the example's own statistics would be caught


def test_virtual_bn_reference_is_saved_and_gets_gradients() -> None:
    model = _vbn_disc()
    model.set_reference(torch.rand(2, 3, 16, 16))
    fresh = _vbn_disc()
    fresh.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)  # same net, same kernels: exact


def test_virtual_bn_gradients_flow_through_reference_statistics() -> None:
    torch.manual_seed(0)
    vbn = VirtualBatchNorm2d(2)
    features = torch.randn(4, 2, 3, 3, requires_grad=True)  # rows 0-2: reference, row 3: the example
    (vbn(features, num_ref=3)[3:] * torch.randn(1, 2, 3, 3)).sum().backward()
    assert features.grad[:3].abs().sum() > 0  # the example's output depends on the reference rows
