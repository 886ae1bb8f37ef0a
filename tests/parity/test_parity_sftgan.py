"""Golden parity: both SFTGAN generator forms and OutdoorSceneSeg against xinntao/SFTGAN's own outputs, loaded
through the real converters (fixtures README §1: sftnet_full, sftnet_torch_full, outdoorsceneseg_full)."""

from __future__ import annotations

import torch
from golden import assert_close_report, fixture_io, fixture_weights

from perceptsr.archs.outdoorseg import CAFFE_MEAN_BGR
from perceptsr.conditions.seg import segment_image
from perceptsr.convert import CONVERTERS, canonicalize, convert_file, detect
from perceptsr.zoo.models import load_model
from perceptsr.zoo.release import build

ATOL = 1e-5  # SFT nets (README: observed thread noise up to 1.9e-6)
PROB_ATOL = 1e-6  # OutdoorSceneSeg probabilities


def test_sft_pytorch_form_through_converter(shared) -> None:
    parity = shared("fixtures/parity")
    state = canonicalize(fixture_weights(parity, "sftnet_full"))
    assert detect(state) == "sftgan-pytorch"
    converted = CONVERTERS["sftgan-pytorch"].convert(state)
    assert converted.arch == "sftgan" and converted.config.form == "pytorch"
    assert (converted.config.num_feat, converted.config.num_block, converted.config.num_classes) == (64, 16, 8)
    model = build(converted.arch, converted.config)
    model.load_state_dict(converted.state_dict, strict=True)
    io = fixture_io(parity, "sftnet_full")
    with torch.inference_mode():
        out = model.eval()(io["input"], seg=io["seg"])
    assert_close_report(out, io["output"], ATOL, "sftnet_full")


def test_sft_torch_form_release_file(shared, tmp_path) -> None:
    parity = shared("fixtures/parity")
    source = tmp_path / "SFTGAN_torch.pth"
    torch.save(fixture_weights(parity, "sftnet_torch_full"), source)  # a raw state dict, as released
    converted = convert_file(source, tmp_path / "sftgan_torch.safetensors")  # kind detected from the keys
    assert converted.arch == "sftgan" and converted.config.form == "torch"
    model = load_model(tmp_path / "sftgan_torch.safetensors", scale=4)
    io = fixture_io(parity, "sftnet_torch_full")
    with torch.inference_mode():
        out = model(io["input"], seg=io["seg"])
    assert_close_report(out, io["output"], ATOL, "sftnet_torch_full via .pth -> release file")


def test_outdoorsceneseg_through_converter(shared) -> None:
    parity = shared("fixtures/parity")
    # as saved by PyTorch 0.4.0: no BatchNorm num_batches_tracked (the converter adds them)
    state = {k: v for k, v in fixture_weights(parity, "outdoorsceneseg_full").items()
             if not k.endswith("num_batches_tracked")}
    assert detect(state) == "outdoorsceneseg"
    converted = CONVERTERS["outdoorsceneseg"].convert(state)
    assert converted.config.blocks == (3, 4, 23, 3) and converted.config.num_classes == 8
    model = build(converted.arch, converted.config).eval()
    model.load_state_dict(converted.state_dict, strict=True)
    del state, converted
    io = fixture_io(parity, "outdoorsceneseg_full")
    with torch.inference_mode():
        logits = model.logits(io["input"])
        assert_close_report(logits, io["logits_before_softmax"], ATOL, "outdoorsceneseg logits")
        assert_close_report(logits.softmax(1), io["output"], PROB_ATOL, "outdoorsceneseg probabilities")
        # Our preprocessing from [0,1] RGB gives the fixture's Caffe input (BGR·255 − mean) back
        rgb = ((io["input"].double() + torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float64).view(1, 3, 1, 1))
               / 255).flip(1).float()
        assert_close_report(segment_image(model, rgb), io["output"], PROB_ATOL, "outdoorsceneseg via segment_image")
