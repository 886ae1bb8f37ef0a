"""SFTGAN: generator forms, the segmentation prior, user maps, training mechanics, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli as cli
from PIL import Image

from perceptsr.archs import ARCHS, PRIORS
from perceptsr.archs.outdoorseg import CAFFE_MEAN_BGR, OutdoorSceneSeg
from perceptsr.archs.sftgan import ACDConfig, ACDDiscriminator, SFTNet, SFTNetConfig
from perceptsr.archs.srresnet import SRResNet, SRResNetConfig
from perceptsr.cli.main import main
from perceptsr.conditions.seg import CLASS_COLORS, read_mapping, seg_condition, segment_image
from perceptsr.data.resize import degrade
from perceptsr.data.segpairs import SegTrainDataset, image_label
from perceptsr.engine.checkpoint import find, load_checkpoint, split_prefix
from perceptsr.engine.setup import build_method, parse_train_config
from perceptsr.engine.train import Trainer
from perceptsr.errors import CheckpointError, ConfigError, InputError
from perceptsr.io.images import read_image, write_image
from perceptsr.methods.transfer import init_from_srresnet, is_sft
from perceptsr.zoo.models import load_model
from perceptsr.zoo.release import save_release


def tiny_sft(form: str = "pytorch") -> SFTNet:
    torch.manual_seed(0)
    return SFTNet(SFTNetConfig(form=form, num_feat=8, num_block=1, cond_feat=4, cond_hidden=8))


def tiny_seg() -> OutdoorSceneSeg:
    torch.manual_seed(0)
    return OutdoorSceneSeg(PRIORS["outdoorsceneseg"].tiny(1)).eval()


def probs(n: int, h: int, w: int) -> torch.Tensor:
    return torch.randn(n, 8, h, w).mul(3).softmax(1)


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("releases")
    seg, sft = tiny_seg(), tiny_sft()
    save_release(folder / "seg.safetensors", arch="outdoorsceneseg", config=seg.config, state_dict=seg.state_dict())
    save_release(folder / "sft.safetensors", arch="sftgan", config=sft.config, state_dict=sft.state_dict())
    return folder / "seg.safetensors", folder / "sft.safetensors"


@pytest.mark.parametrize("form", ["pytorch", "torch"])
def test_generator_shapes_gradients_and_condition(form: str) -> None:
    model = tiny_sft(form)
    assert model.condition_scales == {"seg": 4} and model.scale == 4
    lr, seg = torch.rand(2, 3, 5, 7, requires_grad=True), probs(2, 20, 28)
    sr = model(lr, seg=seg)
    assert sr.shape == (2, 3, 20, 28) and torch.isfinite(sr).all()
    sr.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        assert (model(lr, seg=probs(2, 20, 28)) - sr).abs().max() > 1e-6  # the map matters
    with pytest.raises(InputError, match="segmentation map"):
        model(lr, seg=probs(2, 20, 24))
    with pytest.raises(ConfigError):
        SFTNetConfig(scale=2)


def test_acd_discriminator_heads() -> None:
    model = ACDDiscriminator(ACDConfig(num_feat=4, input_size=32, hidden=8))
    gan, cls = model(torch.rand(3, 3, 32, 32))
    assert gan.shape == (3, 1) and cls.shape == (3, 8)
    with pytest.raises(InputError):
        model(torch.rand(3, 3, 48, 48))


def test_releases_load_and_the_prior_is_not_an_upscaler(releases: tuple[Path, Path]) -> None:
    seg_file, sft_file = releases
    model = load_model(sft_file)
    lr, seg = torch.rand(1, 3, 6, 5), probs(1, 24, 20)
    with torch.no_grad():
        torch.testing.assert_close(model(lr, seg=seg), tiny_sft()(lr, seg=seg), rtol=0, atol=0)
    with pytest.raises(InputError, match="does not upscale"):
        load_model(seg_file)


def test_segment_image_preprocessing_and_odd_sizes() -> None:
    model = tiny_seg()
    rgb = torch.rand(1, 3, 20, 28)  # 28 is not a multiple of 8: reflect-padded to 32, the map cropped back
    out = segment_image(model, rgb)
    assert out.shape == (1, 8, 20, 28)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 20, 28))
    caffe = rgb.flip(1) * 255 - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    with torch.no_grad():
        padded = model(torch.nn.functional.pad(caffe, (0, 4, 0, 4), mode="reflect"))
        torch.testing.assert_close(out, padded[..., :20, :28])
        even = torch.rand(1, 3, 16, 24)
        expected = model(even.flip(1) * 255 - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1))
    torch.testing.assert_close(segment_image(model, even), expected)


def test_map_files_sizes_and_class_counts(tmp_path: Path) -> None:
    lr = torch.rand(1, 3, 6, 5)
    good = probs(1, 24, 20)[0].numpy()
    np.save(tmp_path / "hr.npy", good)
    np.save(tmp_path / "lr.npy", good[:, :6, :5])
    np.save(tmp_path / "wrong_size.npy", good[:, :20, :20])
    np.save(tmp_path / "seven.npy", good[:7])

    def get(name: str, model: str | None = None) -> torch.Tensor:
        return seg_condition(lr, str(tmp_path / name), scale=4, seg_model=model, stem="x")

    torch.testing.assert_close(get("hr.npy"), torch.from_numpy(good)[None])
    small = get("lr.npy")  # at the LR size: each value covers 4x4 HR pixels
    assert small.shape == (1, 8, 24, 20)
    torch.testing.assert_close(small[0, :, 5, 3], torch.from_numpy(good[:, 1, 0]))
    torch.testing.assert_close(small[0, :, 23, 19], torch.from_numpy(good[:, 5, 4]))
    with pytest.raises(InputError, match="20x20"):
        get("wrong_size.npy")
    with pytest.raises(InputError, match="8×H×W"):
        get("seven.npy")
    with pytest.raises(InputError, match="--seg-model applies"):
        get("hr.npy", "seg.safetensors")
    with pytest.raises(InputError, match="no such file"):
        get("missing.npy")
    np.save(tmp_path / "x_segprob.npy", good)  # a folder of maps, found by the image's stem
    torch.testing.assert_close(get(""), torch.from_numpy(good)[None])


def test_label_images_and_class_mappings(tmp_path: Path) -> None:
    lr = torch.rand(1, 3, 2, 3)
    Image.fromarray(np.array([[0, 1, 255], [7, 5, 3]], np.uint8)).save(tmp_path / "ost.png")
    seg = seg_condition(lr, str(tmp_path / "ost.png"), scale=4, seg_model=None, stem="x")
    assert seg.shape == (1, 8, 8, 12)
    assert seg[0, :, ::4, ::4].argmax(0).tolist() == [[0, 1, 0], [7, 5, 3]] and seg.sum(1).eq(1).all()
    Image.fromarray(np.array([[3, 22, 127], [0, 150, 17]], np.uint8)).save(tmp_path / "ade.png")
    with pytest.raises(InputError, match="mapping"):
        seg_condition(lr, str(tmp_path / "ade.png"), scale=4, seg_model=None, stem="x")
    seg = seg_condition(lr, str(tmp_path / "ade.png"), scale=4, seg_model="ade20k", stem="x")
    assert seg[0, :, ::4, ::4].argmax(0).tolist() == [[1, 2, 7], [0, 0, 4]]  # sky water animal / - - mountain
    (tmp_path / "zero.yaml").write_text("first_index: 0\ndefault: plant\nclasses: {sky: [3]}\n")
    assert read_mapping(str(tmp_path / "zero.yaml"))[[2, 3, 0]].tolist() == [1, 6, 6]
    (tmp_path / "bad.yaml").write_text("classes: {forest: [1]}\n")
    with pytest.raises(InputError, match="class mapping"):
        read_mapping(str(tmp_path / "bad.yaml"))
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="one class number per pixel"):
        seg_condition(lr, str(tmp_path / "rgb.png"), scale=4, seg_model=None, stem="x")


def test_seg_auto_needs_the_network(monkeypatch: pytest.MonkeyPatch, releases: tuple[Path, Path]) -> None:
    monkeypatch.delenv("PERCEPTSR_SEG_MODEL", raising=False)
    lr = torch.rand(1, 3, 4, 6)
    with pytest.raises(InputError, match="perceptsr convert segmentation_OST_bic.pth"):
        seg_condition(lr, "auto", scale=4, seg_model=None, stem="x")
    with pytest.raises(InputError, match="not the segmentation network"):
        seg_condition(lr, "auto", scale=4, seg_model=str(releases[1]), stem="x")
    monkeypatch.setenv("PERCEPTSR_SEG_MODEL", str(releases[0]))
    seg = seg_condition(lr, "auto", scale=4, seg_model=None, stem="x")
    assert seg.shape == (1, 8, 16, 24) and torch.allclose(seg.sum(1), torch.ones(1, 16, 24))


@pytest.fixture
def train_data(tmp_path: Path) -> tuple[Path, Path]:
    """Two 'sky' images and one plain one; each map's channel 1 is the image's red channel (to check crops)."""
    rng = np.random.default_rng(0)
    seg_dir = tmp_path / "seg"
    seg_dir.mkdir()
    for folder, name in [("sky", "a"), ("sky", "b"), ("misc", "c")]:
        (tmp_path / folder).mkdir(exist_ok=True)
        image = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
        Image.fromarray(image).save(tmp_path / folder / f"{name}.png")
        seg = np.zeros((8, 40, 48), np.float32)
        seg[1] = image[..., 0] / 255
        seg[6] = 0.9 if name == "c" else 0.0  # the plain image's mean map says "plant"
        np.save(seg_dir / f"{name}_segprob.npy", seg)
    return tmp_path, seg_dir


def test_dataset_aligns_maps_labels_and_background_mix(train_data: tuple[Path, Path]) -> None:
    root, seg_dir = train_data
    data = SegTrainDataset([root / "sky", root / "misc"], seg_dir=seg_dir, background=(), background_every=10,
                           class_label="auto", scale=4, patch_size=16, hflip=True, rotate=True, progress=False)
    assert data.labels == [5, 5, 2]  # sky by folder name; plant (ACD 2) from the map's argmax
    backgrounds = 0
    for seed in range(200):
        sample = data[(seed % 3, seed)]
        assert sample["seg"].shape == (8, 16, 16) and sample["lr"].shape == (3, 4, 4)
        if sample["label"] == 0 and sample["seg"][0].eq(1).all():
            backgrounds += 1
            assert sample["seg"].sum(0).eq(1).all()
        else:
            torch.testing.assert_close(sample["seg"][1], sample["hr"][0])  # cropped and flipped together
    assert 8 <= backgrounds <= 35  # one in 10
    assert image_label(Path("x/misc/c.png"), np.zeros((8, 2, 2)), "path") == 0
    np.save(seg_dir / "a_segprob.npy", np.zeros((8, 40, 44), np.float32))
    with pytest.raises(InputError, match="remake it"):
        SegTrainDataset([root / "sky"], seg_dir=seg_dir, background=(), background_every=10, class_label="path",
                        scale=4, patch_size=16, hflip=True, rotate=True, progress=False)


def tiny_config(root: Path, seg_dir: Path, *, other_start: int, iterations: int = 2) -> dict:
    return {
        "method": "sftgan",
        "model": {
            "generator": {"scale": 4, "num_feat": 8, "num_block": 1, "cond_feat": 4, "cond_hidden": 8},
            "discriminator": {"num_feat": 4, "input_size": 32, "hidden": 8},
            "seg_dir": str(seg_dir), "allow_random_vgg": True, "content_layers": {"conv1_2": 1.0},
            "other_start": other_start, "phases": {"gan": {"iterations": iterations}},
        },
        "data": {"train": [str(root / "sky"), str(root / "misc")], "patch_size": 32, "batch_size": 3, "workers": 0},
        "save_every": iterations, "log_every": 1,
    }


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_training_steps_sft_first(train_data: tuple[Path, Path], tmp_path: Path) -> None:
    config = {**tiny_config(*train_data, other_start=2, iterations=3), "save_every": 1, "keep_checkpoints": 3}
    parsed = parse_train_config(config)
    torch.manual_seed(parsed.seed)
    before = {k: v.clone() for k, v in build_method(parsed).generator.state_dict().items()}
    Trainer(parsed, tmp_path / "run", progress=False).run()

    def at(step: int) -> dict[str, torch.Tensor]:
        return split_prefix(load_checkpoint(find(tmp_path / "run", str(step)), with_state=False).weights, "generator")

    def moved(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> set[str]:
        return {k for k in new if not torch.equal(old[k], new[k])}

    sft = {k for k in before if is_sft(k)}
    assert moved(before, at(2)) == sft  # iterations 0 and 1: only the SFT and condition layers learn
    assert moved(at(2), at(3)) - sft  # from iteration other_start = 2 on, the rest learns too
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    terms = {"g_content", "g_adversarial", "g_class", "d_adversarial", "d_class"}
    assert len(logs) == 3 and all(terms <= set(row) and all(np.isfinite(row[t]) for t in terms) for row in logs)
    assert logs[-1]["d_class"] > 0


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_validation_and_missing_maps_are_config_errors(train_data: tuple[Path, Path], tmp_path: Path) -> None:
    config = tiny_config(*train_data, other_start=0)
    config["data"]["val"] = [str(train_data[0] / "sky")]
    with pytest.raises(ConfigError, match="validate"):
        Trainer(parse_train_config(config), tmp_path / "run", progress=False)
    config = tiny_config(*train_data, other_start=0)
    config["data"]["scale_augment"] = [0.5]  # resized images would not match their segmentation maps
    with pytest.raises(ConfigError, match="scale_augment"):
        Trainer(parse_train_config(config), tmp_path / "run", progress=False)
    config = tiny_config(*train_data, other_start=0)
    config["model"]["seg_dir"] = str(tmp_path / "nowhere")
    with pytest.raises(InputError, match="perceptsr segment"):
        Trainer(parse_train_config(config), tmp_path / "run", progress=False)


def test_init_from_srresnet_adds_fresh_sft_layers() -> None:
    torch.manual_seed(1)
    source = SRResNet(SRResNetConfig(num_feat=8, num_block=1, batch_norm=False, activation="relu", head_kernel=3,
                                     head_activation=False, hr_conv=True, last_kernel=3, output_range="unit"))
    state = source.state_dict()
    generator = SFTNet(SFTNetConfig(num_feat=8, num_block=1))
    fresh = init_from_srresnet(generator, state)
    own = generator.state_dict()
    assert set(fresh) == {k for k in own if "SFT" in k or k.startswith("CondNet.")}
    assert len(fresh) == 3 * 8 + 10  # three SFT layers of 4 convs, 5 condition convs
    assert torch.equal(own["sft_branch.0.conv1.weight"], state["body.0.conv2.weight"])
    assert torch.equal(own["sft_branch.2.bias"], state["conv_body.bias"])
    assert torch.equal(own["HR_branch.3.weight"], state["upsampler.3.weight"])
    assert all(own[k].abs().max() == 0 for k in fresh if k.endswith("bias"))
    assert 0 < own["CondNet.2.weight"].std() < 0.1 * 2 / 8**0.5  # kaiming (std sqrt(2/fan_in)) x 0.1
    paper = SRResNet(SRResNetConfig(num_feat=8, num_block=1)).state_dict()
    with pytest.raises(CheckpointError, match="does not have"):
        init_from_srresnet(SFTNet(SFTNetConfig(num_feat=8, num_block=1)), paper)


def test_segment_and_upscale_end_to_end(shared, releases: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERCEPTSR_SEG_MODEL", raising=False)
    samples = shared("data/OST300_samples")
    seg_file, sft_file = releases
    done = cli("segment", str(samples), "-o", str(tmp_path / "seg"), "--seg-model", str(seg_file))
    assert done.returncode == 0, done.stderr
    for path in sorted(samples.glob("*.png")):
        width, height = Image.open(path).size
        prob = np.load(tmp_path / "seg" / f"{path.stem}_segprob.npy")
        assert prob.shape == (8, height // 4 * 4, width // 4 * 4) and prob.dtype == np.float32
        np.testing.assert_allclose(prob.sum(0), 1, atol=1e-5)
        labels = np.asarray(Image.open(tmp_path / "seg" / f"{path.stem}_byteimg.png"))
        np.testing.assert_array_equal(labels, prob.argmax(0))
        color = np.asarray(Image.open(tmp_path / "seg" / f"{path.stem}_colorimg.png"))
        np.testing.assert_array_equal(color, np.array(CLASS_COLORS, np.uint8)[labels])
        assert (tmp_path / "seg" / f"{path.stem}_legend.png").is_file()
    stamp = (tmp_path / "seg" / "OST_013_segprob.npy").stat().st_mtime_ns
    assert main(["segment", str(samples), "-o", str(tmp_path / "seg"), "--seg-model", str(seg_file)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "seg" / "OST_013_segprob.npy").stat().st_mtime_ns == stamp

    lr_dir = tmp_path / "lr"
    hr = read_image(samples / "OST_013.png").rgb
    write_image(lr_dir / "OST_013.png", degrade(hr, 4))
    done = cli("upscale", str(lr_dir), "-o", str(tmp_path / "sr"), "--model", str(sft_file), "--seg", "auto",
               "--seg-model", str(seg_file), "--tile", "64", "--tile-overlap", "8")
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "sr" / "OST_013.png").size == (640, 480)
    Image.fromarray(np.full((120, 160), 3, np.uint8)).save(tmp_path / "labels.png")  # ADE20K 3 = sky, LR size
    assert main(["upscale", str(lr_dir / "OST_013.png"), "-o", str(tmp_path / "sr_labels"), "--model", str(sft_file),
                 "--seg", str(tmp_path / "labels.png"), "--seg-model", "ade20k"]) == 0
    assert read_image(tmp_path / "sr_labels" / "OST_013.png").rgb.shape == (1, 3, 480, 640)
    assert main(["upscale", str(lr_dir), "-o", str(tmp_path / "none"), "--model", str(sft_file)]) == 2
    assert "perceptsr convert segmentation_OST_bic.pth" in capsys.readouterr().err
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())


def test_table_entries() -> None:
    assert ARCHS["sftgan"].module is SFTNet and "outdoorsceneseg" not in ARCHS
