"""SRFeat: generator fuse, discriminators, the method's phases and frozen BN, the .npz converter, CLI end to end."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli
from foreign import object_array
from foreign import srfeat_to_tensorlayer as to_tensorlayer
from PIL import Image
from tolerance import assert_paths_close, network_depth

from perceptsr.archs.srfeat import (
    SRFeatDiscriminatorConfig,
    SRFeatGenerator,
    SRFeatGeneratorConfig,
    feature_discriminator,
    image_discriminator,
)
from perceptsr.cli.main import main as cli_main
from perceptsr.convert import canonicalize, convert_file, convert_state, read_checkpoint
from perceptsr.engine.checkpoint import find, load_checkpoint, split_prefix
from perceptsr.engine.setup import build_method, parse_train_config
from perceptsr.engine.train import Trainer
from perceptsr.errors import CheckpointError, ConfigError, InputError
from perceptsr.methods.base import Batch
from perceptsr.zoo.models import load_model

TINY_D = {"num_feat": 4, "head": "conv", "dense_features": 8}


def tiny_generator(scale: int = 4, num_block: int = 2) -> SRFeatGenerator:
    torch.manual_seed(0)
    return SRFeatGenerator(SRFeatGeneratorConfig(scale=scale, num_feat=8, num_block=num_block))


# --- architecture ---------------------------------------------------------------------------------------------


def test_release_generator_size_and_keys() -> None:
    model = SRFeatGenerator(SRFeatGeneratorConfig())
    assert sum(p.numel() for p in model.parameters()) == 6_187_907  # methods.md §2.1: about 6.2M
    weights = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    assert len(weights) == 183 and len(model.skips) == 15  # the release's 183 arrays, 15 used long skips
    assert model.upsampler[0].weight.shape == (512, 128, 3, 3) and model.conv_first.weight.shape == (128, 3, 9, 9)


def test_generator_fuses_the_last_block_with_the_other_blocks_skips() -> None:
    model = tiny_generator(num_block=3).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.2)
        lr = torch.rand(2, 3, 5, 7)
        feat = model.conv_first(lr * 2 - 1)
        outs = []
        for block in model.body:
            feat = block(feat)
            outs.append(feat)
        fused = outs[2] + model.skips[0](outs[0]) + model.skips[1](outs[1])  # no head term, no skip of block 2
        expected = (model.conv_last(model.upsampler(fused)) + 1) / 2
        one_skip_less = (model.conv_last(model.upsampler(fused - model.skips[1](outs[1]))) + 1) / 2
        sr = model(lr)
    assert sr.shape == (2, 3, 20, 28)
    tolerance = assert_paths_close(sr, expected, depth=network_depth(model), what="fused skips")
    assert (sr - one_skip_less).abs().max() > 10 * tolerance  # a skip left out is caught
    assert (sr - 0.5).abs().mean() > 1e-3  # a real signal, not the zero-output midpoint


def test_discriminators_have_the_release_stacks() -> None:
    dense = SRFeatDiscriminatorConfig(num_feat=4, dense_features=8)
    image = image_discriminator(dense, 296)
    assert image.linear1.in_features == 4 * 8 * 19 * 19  # the release's flatten: 19·19·(8·num_feat)
    feature = feature_discriminator(dense, 296)
    assert feature.body[0].conv.in_channels == 512 and feature.config.input_size == 18
    assert feature.linear1.in_features == 4 * 8 * 2 * 2  # 2·2·512 after the convs at full width
    torch.manual_seed(0)
    logits = feature(torch.rand(3, 512, 18, 18))
    assert logits.shape == (3, 1) and logits.std() > 0
    with pytest.raises(InputError, match="18×18"):
        feature(torch.rand(1, 512, 16, 16))
    conv = image_discriminator(SRFeatDiscriminatorConfig(**TINY_D), 296)
    assert conv(torch.rand(2, 3, 40, 56)).shape == (2, 1)


# --- method ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray((rng.random((40, 44, 3)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def tiny_config(hr_folder: Path, trains: tuple[str, ...] = ("generator", "image", "feature")) -> dict:
    return {
        "method": "srfeat",
        "model": {
            "generator": {"scale": 4, "num_feat": 8, "num_block": 2},
            "image_discriminator": TINY_D, "feature_discriminator": TINY_D, "patch_size": 16,
            "allow_random_vgg": True,
            "phases": {"pretrain": {"iterations": 2}, "gan": {"iterations": 2, "trains": list(trains)}},
        },
        "data": {"train": [str(hr_folder)], "val": [str(hr_folder)], "patch_size": 16, "batch_size": 2,
                 "workers": 0},
        "save_every": 1, "val_every": 1, "keep_checkpoints": 10, "log_every": 1,
    }


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_losses_per_phase_and_variants(hr_folder: Path) -> None:
    torch.manual_seed(0)
    method = build_method(parse_train_config(tiny_config(hr_folder)))
    batch = Batch(lr=torch.rand(2, 3, 4, 4), hr=torch.rand(2, 3, 16, 16))
    sr = method.make_sr(batch, "pretrain")
    (mse,) = method.generator_losses(batch, sr, "pretrain").values()
    torch.testing.assert_close(mse, 4 * torch.nn.functional.mse_loss(sr, batch.hr))  # MSE in [-1,1]
    g_terms = method.generator_losses(batch, sr, "gan")
    d_terms = method.discriminator_losses(batch, sr.detach(), "gan")
    assert set(g_terms) == {"perceptual", "image", "feature"} and set(d_terms) == {"image", "feature"}
    for value in [*g_terms.values(), *d_terms.values()]:
        assert torch.isfinite(value) and value > 0
    assert g_terms["image"] < 1e-2 and d_terms["feature"] < 1e-2  # the 1e-3 weights are applied
    variant = tiny_config(hr_folder, ("generator", "image"))
    variant["model"]["phases"]["gan"]["iterations"] = 0  # no second VGG: borrow the first one's
    only_image = build_method(parse_train_config(variant))
    only_image.perceptual = method.perceptual
    assert set(only_image.networks()) == {"generator", "image"}
    assert set(only_image.generator_losses(batch, sr, "gan")) == {"perceptual", "image"}
    with pytest.raises(ConfigError, match="phase gan"):
        parse_train_config(tiny_config(hr_folder, ("generator", "pixel")))


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_phases_move_only_their_networks_and_gan_freezes_bn(hr_folder: Path, tmp_path: Path) -> None:
    config = parse_train_config(tiny_config(hr_folder))
    torch.manual_seed(config.seed)
    fresh = {k: v.clone() for k, v in build_method(config).state_dict().items() if not k.startswith("perceptual.")}
    run = tmp_path / "run"
    assert Trainer(config, run, progress=False).run()  # validates every step, toggling train()/eval()
    pretrained = load_checkpoint(find(run, "2"), with_state=False).weights
    final = load_checkpoint(find(run, "4"), with_state=False).weights

    def same(a: dict, b: dict, prefix: str, suffix: str = "") -> bool:
        keys = [k for k in a if k.startswith(prefix) and k.endswith(suffix)]
        assert keys, prefix
        return all(torch.equal(a[k], b[k]) for k in keys)

    assert not same(fresh, pretrained, "generator.", "conv1.weight")
    assert not same(fresh, pretrained, "generator.", "running_mean")  # BN learns statistics while pre-training
    assert same(fresh, pretrained, "discriminators.")  # discriminators wait for the gan phase
    assert not same(pretrained, final, "discriminators.image.", "weight")
    assert not same(pretrained, final, "discriminators.feature.", "weight")
    assert not same(pretrained, final, "generator.", "conv1.weight")
    assert not same(pretrained, final, "generator.", "bn1.weight")  # BN affine parameters still learn
    for stat in ("running_mean", "running_var", "num_batches_tracked"):  # ... but its statistics are frozen
        assert same(pretrained, final, "generator.", stat), stat
        assert same(pretrained, final, "ema.", stat), stat


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_dense_head_needs_its_patch_size(hr_folder: Path, tmp_path: Path) -> None:
    config = tiny_config(hr_folder)
    config["model"]["image_discriminator"] = {"num_feat": 4, "head": "dense", "dense_features": 8}
    config["model"]["patch_size"] = 48
    with pytest.raises(ConfigError, match="image_discriminator.head=conv"):
        Trainer(parse_train_config(config), tmp_path / "run", progress=False)
    config["model"]["phases"]["gan"]["iterations"] = 0  # a pre-training run never feeds the discriminators
    Trainer(parse_train_config(config), tmp_path / "pretrain_only", progress=False)


# --- converter ------------------------------------------------------------------------------------------------


def tf_reference(params: list[np.ndarray], lr: np.ndarray, num_block: int) -> np.ndarray:
    """`SRGAN_g` in numpy on NHWC float64: SAME convs, inference BN (eps 1e-5), depth_to_space, LeakyReLU 0.2."""
    weights = iter(np.asarray(p, np.float64) for p in params)

    def conv(x: np.ndarray, bias: bool = True) -> np.ndarray:
        kernel = next(weights)
        k, (h, w) = kernel.shape[0], x.shape[1:3]
        padded = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
        out = sum(np.einsum("nhwc,co->nhwo", padded[:, dy : dy + h, dx : dx + w], kernel[dy, dx])
                  for dy in range(k) for dx in range(k))
        return out + next(weights) if bias else out

    def batch_norm(x: np.ndarray) -> np.ndarray:
        beta, gamma, mean, var = (next(weights) for _ in range(4))
        return (x - mean) / np.sqrt(var + 1e-5) * gamma + beta

    def depth_to_space(x: np.ndarray, r: int) -> np.ndarray:
        n, h, w, c = x.shape
        return x.reshape(n, h, w, r, r, c // (r * r)).transpose(0, 1, 3, 2, 4, 5).reshape(n, h * r, w * r, -1)

    def lrelu(x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, x, 0.2 * x)

    x = conv(lr * 2 - 1)
    blocks = []
    for _ in range(num_block):
        y = lrelu(batch_norm(conv(x, bias=False)))
        x = x + batch_norm(conv(y, bias=False))
        blocks.append(x)
    x = x + sum(conv(b, bias=False) for b in blocks[:-1])
    for _ in range(2):
        x = lrelu(depth_to_space(conv(x), 2))
    return (conv(x) + 1) / 2


def randomized_generator() -> SRFeatGenerator:
    model = tiny_generator(scale=4, num_block=3)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if name.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
            elif value.is_floating_point():
                value.copy_(torch.randn(value.shape, generator=generator) * 0.1)
    return model.eval()


def save_protocol2_npz(path: Path, params: list[np.ndarray]) -> None:
    """The npz as numpy <= 1.16 under Python 3 wrote it: pickle protocol 2, numpy.core names, bytes via _codecs."""
    data = pickle.dumps(object_array(params), protocol=2)
    data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"_codecs\nencode" in data and b"numpy.core.multiarray\n_reconstruct" in data
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "|O", "fortran_order": False, "shape": (len(params),)})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("params.npy", member.getvalue() + data)


def test_convert_cli_matches_a_tensorflow_layout_reference(tmp_path: Path) -> None:
    model = randomized_generator()
    params = to_tensorlayer(model)
    assert len(params) == 11 * 3 + 7  # 183 for the release's 16 blocks
    source = tmp_path / "SRFeat_full.npz"
    np.savez(source, params=object_array(params))  # tensorlayer's save_npz: one pickled list
    with np.load(source, allow_pickle=False) as archive, pytest.raises(ValueError, match="allow_pickle"):
        archive["params"]  # why read_npz exists
    target = tmp_path / "srfeat_x4.safetensors"
    result = run_cli("convert", source, "-o", target)
    assert result.returncode == 0, result.stderr
    converted = load_model(target)
    assert converted.config == SRFeatGeneratorConfig(scale=4, num_feat=8, num_block=3)
    lr = np.random.default_rng(2).random((2, 6, 5, 3))
    with torch.no_grad():
        sr = converted(torch.from_numpy(lr).permute(0, 3, 1, 2).float()).permute(0, 2, 3, 1).double().numpy()
    reference = tf_reference(params, lr, num_block=3)
    assert reference.std() > 0.05
    assert_paths_close(sr, reference, depth=network_depth(converted), what="ours vs TF semantics")
    for variant, save in (("protocol2", lambda p: save_protocol2_npz(p, params)),
                          ("arr_keys", lambda p: np.savez(p, *params))):
        path = tmp_path / f"{variant}.npz"
        save(path)
        again = convert_file(path, tmp_path / f"{variant}.safetensors")
        for key, value in again.state_dict.items():
            assert torch.equal(value, converted.state_dict()[key]), (variant, key)


def test_converter_names_the_first_bad_entry() -> None:
    params = to_tensorlayer(tiny_generator(scale=4, num_block=2))  # 29 arrays

    def error(params: list[np.ndarray]) -> str:
        with pytest.raises(CheckpointError) as caught:
            convert_state(canonicalize({"params": params}), kind="srfeat-npz")
        assert "\n" not in str(caught.value)
        return str(caught.value)

    bad_shape = list(params)
    bad_shape[3] = np.zeros(7, np.float32)
    assert "params[3] (SRGAN_g/n64s1/b1/0/beta) has shape [7], expected [8]" in error(bad_shape)
    missing = params[:5] + params[6:]  # b1/0 moving_mean dropped: the first shifted shape is flagged
    assert "28 arrays where 29 were expected" in error(missing) and "params[6] (SRGAN_g/n64s1/b1/0/" in error(missing)
    assert "SRGAN_g/out/b_conv2d (entry 28) is missing" in error(params[:-1])
    assert "params[29] is unexpected" in error([*params, np.zeros(3, np.float32)])


class Payload:
    """What a malicious npz could carry: unpickling it would create `marker` (were any global allowed)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.marker),))


def test_npz_pickles_are_restricted_to_numeric_arrays(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.npz"
    np.savez(evil, params=object_array([np.zeros(3, np.float32), Payload(marker)]))
    with pytest.raises(CheckpointError, match="posix.mkdir is not allowed"):
        read_checkpoint(evil)
    assert not marker.exists()
    np.savez(tmp_path / "dicts.npz", params=object_array([np.zeros(3, np.float32), {"a": 1}]))
    with pytest.raises(CheckpointError, match="other than a list of numeric arrays"):
        read_checkpoint(tmp_path / "dicts.npz")


# --- end to end -----------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_train_export_upscale_on_t91(shared: callable, tmp_path: Path) -> None:
    t91 = shared("data/T91")
    overrides = [
        "model.generator.num_feat=8", "model.generator.num_block=2", "model.patch_size=64",
        "model.image_discriminator={num_feat: 4, head: conv, dense_features: 8}",
        "model.feature_discriminator={num_feat: 4, head: conv, dense_features: 8}",
        "model.allow_random_vgg=true", "model.phases.pretrain.iterations=2", "model.phases.gan.iterations=2",
        f"data.train=[{t91}]", "data.val=[]", "data.patch_size=64", "data.batch_size=2", "data.workers=0",
    ]
    run = tmp_path / "run"
    result = run_cli("train", ROOT / "configs/srfeat_x4.yaml", "-o", run, "--quiet",
                     *[arg for item in overrides for arg in ("--set", item)], timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_checkpoint(find(run, "latest"), with_state=False).meta["step"] == 4
    release = tmp_path / "srfeat.safetensors"
    assert cli_main(["export", str(run), "-o", str(release)]) == 0
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    assert cli_main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--model", str(release)]) == 0
    assert Image.open(tmp_path / "out" / "in.png").size == (40, 48)
    trained = split_prefix(load_checkpoint(find(run, "latest"), with_state=False).weights, "generator")
    assert torch.equal(load_model(release).state_dict()["conv_first.weight"], trained["conv_first.weight"])
