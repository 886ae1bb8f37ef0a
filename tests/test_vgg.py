"""VGG19 feature taps, normalisation, and how the weights are found (path, env var, hub) or refused."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from safetensors.torch import save_file
from tolerance import assert_paths_close, network_depth
from torch import nn

from perceptsr.archs.vgg import VGG16_CFG, VGG19_CFG, VGGFeatureExtractor, layer_indices
from perceptsr.errors import CheckpointError, ConfigError
from perceptsr.zoo.weights import VGG19_IMAGENET

ENV = VGG19_IMAGENET.env
# torchvision's vgg19().features up to conv2_2: index -> (out, in) channels
FAKE_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128)}


def fake_state() -> dict[str, torch.Tensor]:
    """A torchvision-layout VGG19 state_dict cut after conv2_2, random values, plus a classifier entry."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for index, (out_ch, in_ch) in FAKE_CONVS.items():
        state[f"features.{index}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=generator) * 0.05
        state[f"features.{index}.bias"] = torch.randn(out_ch, generator=generator) * 0.1
    state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored on purpose
    return state


@pytest.fixture
def fake_file(tmp_path, monkeypatch) -> str:
    monkeypatch.delenv(ENV, raising=False)
    path = tmp_path / "my_vgg.pth"
    torch.save(fake_state(), path)
    return str(path)


def manual_features(state: dict[str, torch.Tensor]) -> nn.Sequential:
    """The same layers written out by hand, as torchvision lays them out."""
    layers = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(128, 128, 3, padding=1),
        nn.ReLU(),
    )
    layers.load_state_dict({k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")})
    return layers


def test_layer_indices_match_torchvision() -> None:
    vgg19 = layer_indices(VGG19_CFG)
    assert [vgg19[n] for n in ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4")] == [2, 7, 16, 25, 34]
    assert vgg19["relu5_4"] == 35 and vgg19["pool1"] == 4 and vgg19["pool5"] == 36
    vgg16 = layer_indices(VGG16_CFG)
    assert (vgg16["relu1_2"], vgg16["relu2_2"], vgg16["relu3_3"], vgg16["relu4_3"], vgg16["relu5_3"]) == (
        3,
        8,
        15,
        22,
        29,
    )


def test_taps_by_name_equal_a_hand_run_sequential(fake_file: str) -> None:
    names = ["relu2_2", "conv1_2", "relu1_2", "pool1", "conv2_2"]
    extractor = VGGFeatureExtractor(names, weights=fake_file)
    assert len(extractor.vgg.features) == 9  # built only up to relu2_2
    torch.manual_seed(0)
    x = torch.rand(2, 3, 12, 10)
    found = extractor(x)
    assert list(found) == names
    manual = manual_features(fake_state())
    normalized = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    for name, end in (("conv1_2", 3), ("relu1_2", 4), ("pool1", 5), ("conv2_2", 8), ("relu2_2", 9)):
        assert_paths_close(found[name], manual[:end](normalized), depth=network_depth(manual[:end]), what=name)
    assert found["conv1_2"].min() < 0 and found["relu1_2"].min() >= 0  # pre-ReLU tap not clobbered


def test_weights_from_env_var_and_safetensors(tmp_path, monkeypatch) -> None:
    path = tmp_path / "vgg.safetensors"
    save_file(fake_state(), str(path))
    monkeypatch.setenv(ENV, str(path))
    extractor = VGGFeatureExtractor(["conv2_2"])
    torch.testing.assert_close(extractor.vgg.features[5].weight, fake_state()["features.5.weight"])


def test_without_weights_and_offline_it_raises(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    calls = []

    def offline(url: str, *args: object, **options: object) -> None:
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(
        CheckpointError, match=f"not available offline.*--vgg-weights.*{ENV}.*vgg19-dcbb9e9d.pth"
    ):
        VGGFeatureExtractor(["relu5_4"])
    assert calls == [VGG19_IMAGENET.url]
    assert "Downloading" not in capsys.readouterr().err  # no download announced when there is none


def test_random_weights_need_the_opt_in_and_warn(monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "download_url_to_file", pytest.fail)  # never looked up with the opt-in
    monkeypatch.setattr(torch.hub, "get_dir", pytest.fail)
    with pytest.warns(UserWarning, match="RANDOM VGG weights"):
        extractor = VGGFeatureExtractor(["relu1_1"], allow_random=True)
    assert extractor(torch.rand(1, 3, 8, 8))["relu1_1"].abs().sum() > 0


def test_frozen_and_always_eval(fake_file: str) -> None:
    extractor = VGGFeatureExtractor(["relu1_2"], weights=fake_file)
    extractor.train()
    assert not extractor.training and not extractor.vgg.features[0].training
    assert not any(p.requires_grad for p in extractor.parameters())


def test_normalisations() -> None:
    with pytest.warns(UserWarning):
        imagenet = VGGFeatureExtractor(["conv1_1"], allow_random=True)
        caffe = VGGFeatureExtractor(["conv1_1"], normalize="caffe", allow_random=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    torch.testing.assert_close(imagenet.prepare(mean), torch.zeros(1, 3, 2, 2))
    pixel = torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1)  # R, G, B
    expected = torch.tensor([0.8 * 255 - 103.939, 0.5 * 255 - 116.779, 0.2 * 255 - 123.68]).view(1, 3, 1, 1)
    torch.testing.assert_close(caffe.prepare(pixel), expected)


def test_bad_weight_files(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    missing = fake_state()
    del missing["features.7.bias"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="features.7.bias"):
        VGGFeatureExtractor(["conv2_2"], weights=tmp_path / "missing.pth")
    stranger = {**fake_state(), "head.weight": torch.zeros(1)}
    torch.save(stranger, tmp_path / "stranger.pth")
    with pytest.raises(CheckpointError, match="head.weight"):
        VGGFeatureExtractor(["conv1_1"], weights=tmp_path / "stranger.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        VGGFeatureExtractor(["conv1_1"], weights=tmp_path / "nowhere.pth")
    # a file named like torchvision's must carry its hash prefix
    torch.save(fake_state(), tmp_path / "vgg19-dcbb9e9d.pth")
    with pytest.raises(CheckpointError, match="sha256"):
        VGGFeatureExtractor(["conv1_1"], weights=tmp_path / "vgg19-dcbb9e9d.pth")
    with pytest.raises(ConfigError, match="conv6_1"):
        VGGFeatureExtractor(["conv6_1"], allow_random=True)


def test_weights_stored_in_bf16_give_the_autocast_features_and_gradients(fake_file: str) -> None:
    """store_in(bf16) (what the trainer does under bf16 autocast): under autocast the features and the input's
    gradient are the ones the fp32-stored extractor gives (autocast casts its weights the same way, every call);
    outside autocast it computes in bf16 instead of failing on the dtype."""
    stored = VGGFeatureExtractor(["relu1_2", "conv2_2"], weights=fake_file)
    reference = VGGFeatureExtractor(["relu1_2", "conv2_2"], weights=fake_file)
    assert stored.store_in(torch.bfloat16) is stored and stored.mean.dtype == torch.float32
    x = torch.rand(2, 3, 24, 20)
    results = []
    for extractor in (stored, reference):
        image = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features = extractor(image)
        sum(f.float().sum() for f in features.values()).backward()
        results.append((features, image.grad))
    for name in ("relu1_2", "conv2_2"):
        assert torch.equal(results[0][0][name], results[1][0][name])
    assert torch.equal(results[0][1], results[1][1])
    plain = stored(x)["conv2_2"]
    assert plain.dtype == torch.bfloat16
    torch.testing.assert_close(plain.float(), results[1][0]["conv2_2"].float())
