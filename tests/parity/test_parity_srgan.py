"""Golden parity: MSRResNet and VGGStyleDiscriminator against BasicSR's own outputs (fixtures README §1)."""

from __future__ import annotations

import pytest
import torch
from golden import assert_close_report, fixture_io, fixture_weights

from perceptsr.archs import ARCHS
from perceptsr.archs.discriminators import VGGStyleDiscriminator, VGGStyleDiscriminatorConfig
from perceptsr.convert import CONVERTERS, canonicalize, convert_file, detect
from perceptsr.zoo.release import load_release

ATOL = 1e-5
RTOL = 1e-5  # fixtures README: small configs and discriminators, rtol 1e-5 + atol 1e-5 (the full VGG
# discriminator's logits of ~2.3 differ by 1.8e-5 on an AVX2 CPU: summation order, not a different network)


@pytest.mark.parametrize(
    ("name", "scale", "num_feat", "num_block"),
    [
        ("msrresnet_small_x2", 2, 16, 2),
        ("msrresnet_small_x3", 3, 16, 2),
        ("msrresnet_small_x4", 4, 16, 2),
        ("msrresnet_full_x4", 4, 64, 16),
    ],
)
def test_msrresnet_through_converter(shared, name: str, scale: int, num_feat: int, num_block: int) -> None:
    parity = shared("fixtures/parity")
    state = canonicalize(fixture_weights(parity, name))
    kind = detect(state)
    assert kind == "basicsr-msrresnet"
    converted = CONVERTERS[kind].convert(state)
    assert converted.arch == "msrresnet"
    assert (converted.config.scale, converted.config.num_feat, converted.config.num_block) == (
        scale,
        num_feat,
        num_block,
    )
    model = ARCHS[converted.arch].module(converted.config)
    model.load_state_dict(converted.state_dict, strict=True)
    io = fixture_io(parity, name)
    with torch.inference_mode():
        out = model.eval()(io["input"])
    assert_close_report(out, io["output"], ATOL, name, rtol=RTOL)


def test_msrresnet_params_wrapper_file(shared, tmp_path) -> None:
    parity = shared("fixtures/parity")
    release = tmp_path / "msrresnet_x4.safetensors"
    converted = convert_file(parity / "pth" / "msrresnet_small_x4.params.pth", release)
    assert converted.config.scale == 4
    model = load_release(release)
    io = fixture_io(parity, "msrresnet_small_x4")
    with torch.inference_mode():
        out = model(io["input"])
    assert_close_report(out, io["output"], ATOL, "msrresnet_small_x4 via params.pth", rtol=RTOL)


@pytest.mark.parametrize(
    ("name", "num_feat", "input_size"),
    [("vggdisc_small_128", 8, 128), ("vggdisc_small_256", 8, 256), ("vggdisc_full_128", 64, 128)],
)
def test_vgg_style_discriminator(shared, name: str, num_feat: int, input_size: int) -> None:
    parity = shared("fixtures/parity")
    model = VGGStyleDiscriminator(VGGStyleDiscriminatorConfig(num_feat=num_feat, input_size=input_size))
    weights = fixture_weights(parity, name)
    assert list(model.state_dict()) == list(weights)  # same names, same order as BasicSR
    model.load_state_dict(weights, strict=True)
    io = fixture_io(parity, name)
    with torch.inference_mode():
        out = model.eval()(io["input"])
    assert_close_report(out, io["output"], ATOL, name, rtol=RTOL)
