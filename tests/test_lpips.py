"""LPIPS v0.1: key layouts, the formula against a from-scratch reference, metric properties, weight resolution.

All weights are made here (seeded); nothing is downloaded (the download is replaced by a local copy).
"""

from __future__ import annotations

import hashlib
import urllib.error
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from tolerance import assert_paths_close, network_depth
from torch import Tensor

from perceptsr.errors import CheckpointError, InputError
from perceptsr.metrics import lpips as lp
from perceptsr.metrics.lpips import LPIPS, LPIPS_NETS, load_lpips, load_lpips_state, lpips_distance
from perceptsr.zoo.weights import read_tensor_file


def seeded(net: str, seed: int = 0) -> LPIPS:
    """An LPIPS with random backbone and non-negative heads (as the published heads are)."""
    torch.manual_seed(seed)
    module = LPIPS(net)
    for k in range(5):
        head = getattr(module, f"lin{k}").model[1].weight
        head.data = torch.rand_like(head)
    for conv in module.backbone.features:
        if isinstance(conv, torch.nn.Conv2d):  # keep activations alive through the depth
            conv.weight.data.mul_(3.0)
    return module


def split_state(module: LPIPS) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    state = module.state_dict()
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    linear = {k: v for k, v in state.items() if k.startswith("lin")}
    return backbone, linear


def save_weights(module: LPIPS, folder: Path) -> tuple[Path, Path]:
    """Write the two files under their published names (what a user's folder holds)."""
    spec = LPIPS_NETS[module.net]
    folder.mkdir(parents=True, exist_ok=True)
    backbone, linear = split_state(module)
    backbone_path, linear_path = folder / spec.backbone.filename, folder / spec.linear.filename
    torch.save(backbone, backbone_path)
    torch.save(linear, linear_path)
    return backbone_path, linear_path


def trust(monkeypatch: pytest.MonkeyPatch, net: str, backbone: Path, linear: Path) -> None:
    """Make the expected hashes those of the test's files, so the real hash checks run and pass."""
    spec = LPIPS_NETS[net]

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    monkeypatch.setitem(LPIPS_NETS, net, replace(spec, backbone=replace(spec.backbone, sha256=digest(backbone)),
                                                 linear=replace(spec.linear, sha256=digest(linear))))


def test_key_layout_is_torchvision_and_lpips_v01() -> None:
    alex = LPIPS("alex").state_dict()
    assert {k: tuple(v.shape) for k, v in alex.items() if k.startswith("backbone.")} == {
        "backbone.features.0.weight": (64, 3, 11, 11), "backbone.features.0.bias": (64,),
        "backbone.features.3.weight": (192, 64, 5, 5), "backbone.features.3.bias": (192,),
        "backbone.features.6.weight": (384, 192, 3, 3), "backbone.features.6.bias": (384,),
        "backbone.features.8.weight": (256, 384, 3, 3), "backbone.features.8.bias": (256,),
        "backbone.features.10.weight": (256, 256, 3, 3), "backbone.features.10.bias": (256,),
    }
    assert {k: tuple(v.shape) for k, v in alex.items() if k.startswith("lin")} == {
        f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
    vgg = LPIPS("vgg").state_dict()
    convs = sorted(int(k.split(".")[2]) for k in vgg if k.startswith("backbone.") and k.endswith("weight"))
    assert convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # vgg16 features up to relu5_3
    assert [tuple(vgg[f"lin{k}.model.1.weight"].shape)[1] for k in range(5)] == [64, 128, 256, 512, 512]


def reference_alex(x: Tensor, y: Tensor, backbone: dict[str, Tensor], linear: dict[str, Tensor]) -> Tensor:
    """LPIPS written out from the paper's recipe with functional ops (independent of the module's code)."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(z: Tensor) -> list[Tensor]:
        z = ((2 * z - 1) - shift) / scale
        out = []
        z = F.relu(F.conv2d(z, backbone["features.0.weight"], backbone["features.0.bias"], stride=4, padding=2))
        out.append(z)
        z = F.relu(F.conv2d(F.max_pool2d(z, 3, 2), backbone["features.3.weight"], backbone["features.3.bias"],
                            padding=2))
        out.append(z)
        z = F.max_pool2d(z, 3, 2)
        for index in (6, 8, 10):
            z = F.relu(F.conv2d(z, backbone[f"features.{index}.weight"], backbone[f"features.{index}.bias"],
                                padding=1))
            out.append(z)
        return out

    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for k, (a, b) in enumerate(zip(taps(x), taps(y), strict=True)):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total += ((a - b) ** 2 * linear[f"lin{k}.model.1.weight"]).sum(1).mean((1, 2)).double()
    return total


def test_matches_the_written_out_formula() -> None:
    module = seeded("alex")
    backbone, linear = split_state(module)
    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 64, 72), torch.rand(2, 3, 64, 72)
    got = module(x, y)
    assert got.shape == (2,) and bool((got > 0).all())
    expected = reference_alex(x, y, backbone, linear)
    tolerance = assert_paths_close(got, expected, depth=network_depth(module), what="LPIPS vs formula")
    assert tolerance < 0.01 * float(expected.min())  # far below the distances: a wrong weight or constant shows


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_metric_properties(net: str) -> None:
    module = seeded(net)
    torch.manual_seed(2)
    x = torch.rand(1, 3, 32, 32)
    noise = torch.randn_like(x)
    assert float(module(x, x)[0]) == 0.0
    distances = [lpips_distance((x + level * noise).clamp(0, 1), x, module) for level in (0.02, 0.08, 0.3)]
    assert 0 < distances[0] < distances[1] < distances[2]
    other = (x + 0.08 * noise).clamp(0, 1)
    assert lpips_distance(x, other, module) == pytest.approx(lpips_distance(other, x, module), rel=1e-6)


def test_crop_and_size_checks() -> None:
    module = seeded("alex")
    torch.manual_seed(3)
    x, y = torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 40)
    y_same_centre = y.clone()
    y_same_centre[..., 4:-4, 4:-4] = x[..., 4:-4, 4:-4]
    assert lpips_distance(x, y_same_centre, module, crop_border=4) == 0.0  # only the border differed
    assert lpips_distance(x, y_same_centre, module) > 0
    with pytest.raises(InputError, match="16"):
        module(torch.rand(1, 3, 12, 40), torch.rand(1, 3, 12, 40))
    with pytest.raises(InputError, match="one shape"):
        module(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 40))


def test_files_made_here_load_strictly(tmp_path: Path) -> None:
    source = seeded("alex", seed=5)
    backbone_path, linear_path = save_weights(source, tmp_path)
    loaded = load_lpips_state(LPIPS("alex"), read_tensor_file(backbone_path), read_tensor_file(linear_path))
    torch.manual_seed(4)
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert torch.equal(loaded(x, y), source(x, y))
    linear = read_tensor_file(linear_path)
    with pytest.raises(CheckpointError, match="lin3.model.1.weight"):
        load_lpips_state(LPIPS("alex"), read_tensor_file(backbone_path), {k: v for k, v in linear.items()
                                                                          if not k.startswith("lin3")})
    with pytest.raises(CheckpointError, match="shape"):
        load_lpips_state(LPIPS("alex"), read_tensor_file(backbone_path),
                         {**linear, "lin0.model.1.weight": torch.ones(1, 32, 1, 1)})
    with pytest.raises(CheckpointError, match="unexpected"):
        load_lpips_state(LPIPS("alex"), read_tensor_file(backbone_path), {**linear, "lin5.model.1.weight": linear[
            "lin0.model.1.weight"]})


def test_folder_loads_with_hash_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = seeded("alex", seed=6)
    backbone_path, linear_path = save_weights(source, tmp_path / "weights")
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with pytest.raises(CheckpointError, match="sha256"):  # the published hashes: our files are not those
        load_lpips("alex", folder=tmp_path / "weights")
    trust(monkeypatch, "alex", backbone_path, linear_path)
    assert torch.equal(load_lpips("alex", folder=tmp_path / "weights")(x, y), source(x, y))
    monkeypatch.setenv(lp.FOLDER_ENV, str(tmp_path / "weights"))
    assert torch.equal(load_lpips("alex")(x, y), source(x, y))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_lpips("alex", folder=tmp_path / "nowhere")
    linear_path.unlink()
    with pytest.raises(CheckpointError, match="alex.pth"):
        load_lpips("alex", folder=tmp_path / "weights")


def test_offline_without_weights_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lp.FOLDER_ENV, raising=False)
    monkeypatch.delenv(LPIPS_NETS["alex"].backbone.env, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CheckpointError) as caught:
        load_lpips("alex")
    message = str(caught.value)
    assert "\n" not in message and "--lpips-weights" in message and "not available offline" in message


def test_download_goes_to_the_hub_cache_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = seeded("alex", seed=7)
    backbone_path, linear_path = save_weights(source, tmp_path / "published")
    trust(monkeypatch, "alex", backbone_path, linear_path)
    monkeypatch.delenv(lp.FOLDER_ENV, raising=False)
    monkeypatch.delenv(LPIPS_NETS["alex"].backbone.env, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    fetched = []

    def fake_download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        name = url.rsplit("/", 1)[-1]
        data = (tmp_path / "published" / name).read_bytes()
        assert hash_prefix is not None and hashlib.sha256(data).hexdigest().startswith(hash_prefix)
        fetched.append(name)
        Path(dst).write_bytes(data)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert torch.equal(load_lpips("alex")(x, y), source(x, y))
    assert sorted(fetched) == ["alex.pth", "alexnet-owt-7be5be79.pth"]
    assert (tmp_path / "hub" / "checkpoints" / "lpips_v0.1_alex.pth").is_file()
    load_lpips("alex")
    assert len(fetched) == 2  # cached
