"""NatSR: DCT noise, blur blend, texture filter, the NMD curriculum (and its resume), phases, TF conversion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import torch
from foreign import frsr_to_tf as _frsr_to_tf
from foreign import to_tf as _to_tf
from PIL import Image
from tolerance import assert_paths_close, network_depth

from perceptsr.archs.natsr import FRSR, NMD, FRSRConfig, NatSRDiscriminator, NatSRDiscriminatorConfig, NMDConfig
from perceptsr.convert import convert_state, read_checkpoint
from perceptsr.convert.natsr import convert_frsr_tf, convert_nmd_tf, load_nmd_state
from perceptsr.data.nmd import TexturedDataset, blur_blend, inject_dct_noise, interpolated_lr, texture_stats
from perceptsr.engine.checkpoint import find, load_checkpoint, split_prefix
from perceptsr.engine.setup import parse_train_config
from perceptsr.engine.train import Trainer
from perceptsr.errors import CheckpointError, ConfigError, InputError
from perceptsr.methods.base import Batch
from perceptsr.methods.natsr import NatSR, NatSRConfig

SMALL_D = NatSRDiscriminatorConfig(num_feat=2)


# --- NMD data -----------------------------------------------------------------------------------------------


def _block_dct(image: torch.Tensor) -> np.ndarray:
    """Independent reference: scipy's orthonormal 2-D DCT of every 8×8 block -> (..., blocks_h, blocks_w, 8, 8)."""
    n, c, h, w = image.shape
    blocks = image.double().numpy().reshape(n, c, h // 8, 8, w // 8, 8).transpose(0, 1, 2, 4, 3, 5)
    return scipy.fft.dctn(blocks, axes=(-2, -1), norm="ortho")


def test_dct_noise_hits_only_the_15_targeted_coefficients_with_variance_sigma_squared() -> None:
    torch.manual_seed(0)
    hr = torch.rand(4, 3, 64, 48)
    energies = []
    for sigma in (0.1, 0.2):
        noisy = inject_dct_noise(hr, sigma, torch.Generator().manual_seed(7))
        energies.append(np.square(_block_dct(noisy - hr)))
    targeted = np.zeros((8, 8), dtype=bool)
    targeted[7, :] = targeted[:, 7] = True
    assert targeted.sum() == 15
    for sigma, energy in zip((0.1, 0.2), energies, strict=True):
        assert energy[..., ~targeted].max() < 1e-12
        assert (energy[..., targeted].mean(axis=(0, 1, 2, 3)) > 0.5 * sigma**2).all()  # every one of the 15
        assert energy[..., targeted].mean() == pytest.approx(sigma**2, rel=0.05)  # 4*3*48 blocks * 15 draws
    np.testing.assert_allclose(energies[1][..., targeted], 4 * energies[0][..., targeted], rtol=1e-3, atol=1e-8)


def test_dct_noise_needs_multiples_of_8() -> None:
    with pytest.raises(InputError, match="multiples of 8"):
        inject_dct_noise(torch.rand(1, 3, 12, 16), 0.1, torch.Generator())


def test_blur_blend_is_the_identity_at_alpha_one_and_bicubic_at_zero() -> None:
    torch.manual_seed(0)
    hr, lr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 4, 4)
    ilr = interpolated_lr(lr, 4)
    assert ilr.shape == hr.shape and (ilr - hr).abs().mean() > 0.1
    assert torch.equal(blur_blend(hr, ilr, 1.0), hr)
    assert torch.equal(blur_blend(hr, ilr, 0.0), ilr)
    torch.testing.assert_close(blur_blend(hr, ilr, 0.7), 0.7 * hr + 0.3 * ilr)
    torch.testing.assert_close(interpolated_lr(torch.full((1, 3, 4, 5), 0.3), 4), torch.full((1, 3, 16, 20), 0.3))


def test_texture_stats_and_filter() -> None:
    assert texture_stats(torch.full((3, 8, 8), 0.5)) == (0.0, 0.0)
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2
    gradient, variance = texture_stats(checker.float().expand(3, 8, 8))
    assert gradient == pytest.approx(2.0) and variance == pytest.approx(0.25)

    class Patches:  # textured only for some seeds
        def __len__(self) -> int:
            return 1

        def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
            rng = np.random.default_rng(key[1])
            flat = rng.random() < 0.8
            hr = torch.full((3, 8, 8), 0.5) if flat else torch.from_numpy(rng.random((3, 8, 8))).float()
            return {"hr": hr, "lr": hr[:, ::4, ::4]}

    dataset = TexturedDataset(Patches(), min_gradient=0.005, min_variance=0.03, tries=50)
    for seed in range(5):
        sample = dataset[(0, seed)]
        gradient, variance = texture_stats(sample["hr"])
        assert gradient >= 0.005 and variance >= 0.03
        assert torch.equal(dataset[(0, seed)]["hr"], sample["hr"])


# --- networks -----------------------------------------------------------------------------------------------


def test_network_sizes_match_the_released_checkpoints() -> None:
    # Float counts of methods.md §5.7: FRSR 19,836,940 B / 4; NMD weights are a third of its Adam-laden file.
    assert sum(p.numel() for p in FRSR(FRSRConfig()).parameters()) == 19_836_940 // 4
    assert sum(p.numel() for p in NMD(NMDConfig()).parameters()) == 4_689_985
    nmd, critic = NMD(NMDConfig(num_feat=4)), NatSRDiscriminator(NatSRDiscriminatorConfig(num_feat=2))
    assert nmd(torch.rand(2, 3, 32, 48)).shape == (2, 1) and critic(torch.rand(2, 3, 32, 32)).shape == (2, 1)
    with pytest.raises(InputError, match="multiples of 16"):
        nmd(torch.rand(1, 3, 24, 32))
    with pytest.raises(ConfigError, match="multiple of 4"):
        FRSRConfig(num_block=6)


# --- the method ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    for i in range(4):
        smooth = np.kron(rng.random((5, 6, 3)), np.ones((8, 8, 1))) * 200
        Image.fromarray((smooth + rng.random((40, 48, 3)) * 55).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def tiny(hr_folder: Path, *, nmd: int = 0, pretrain: int = 0, gan: int = 0, **model: object) -> dict:
    """FRSR 8 channels × 4 blocks, NMD and D of width 2-4, 32-pixel HR patches, batch 8."""
    config = {
        "method": "natsr",
        "model": {
            "generator": {"scale": 4, "num_feat": 8, "num_block": 4, "num_layer": 2},
            "nmd": {"num_feat": 4},
            "discriminator": {"num_feat": 2},
            "curriculum_every": 2,
            "curriculum_window": 2,
            "curriculum_val_size": 4,
            "phases": {"nmd": {"iterations": nmd}, "pretrain": {"iterations": pretrain},
                       "gan": {"iterations": gan}},
            **model,
        },
        "data": {"train": [str(hr_folder)], "patch_size": 32, "batch_size": 8, "workers": 0},
        "save_every": 1,
        "log_every": 1,
        "keep_checkpoints": 10,
    }
    return config


def weights_at(run: Path, step: int | str) -> dict[str, torch.Tensor]:
    return load_checkpoint(find(run, str(step)), with_state=False).weights


def moved(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> bool:
    a, b = split_prefix(before, prefix), split_prefix(after, prefix)
    assert a.keys() == b.keys() and a
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_curriculum_fires_at_the_threshold_not_above_only(monkeypatch: pytest.MonkeyPatch) -> None:
    config = NatSRConfig(generator=FRSRConfig(num_feat=4, num_block=4, num_layer=1), nmd=NMDConfig(num_feat=2),
                         discriminator=SMALL_D, curriculum_every=1, curriculum_window=2)
    for accuracy, fires in ((95.0, True), (94.99, False)):
        method = NatSR(config)
        monkeypatch.setattr(method, "validate_nmd", lambda a=accuracy: (a, a))
        logs = [method.after_step(step, "nmd", None) for step in range(3)]
        assert logs[0]["nmd_sigma"] == pytest.approx(0.1) and logs[0]["nmd_alpha"] == pytest.approx(0.5)
        # window 2 starts at zeros: the average reaches the accuracy at the 2nd check, and repeats at the 3rd
        expected_sigma = 0.1 * 0.8**2 if fires else 0.1
        assert float(method.noise_sigma) == pytest.approx(expected_sigma)
        assert float(method.blend_alpha) == pytest.approx(0.7 if fires else 0.5)
        assert logs[-1]["nmd_val_noise_accuracy"] == accuracy
    method = NatSR(config)
    monkeypatch.setattr(method, "validate_nmd", lambda: (100.0, 100.0))
    for step in range(10):
        method.after_step(step, "nmd", None)
    assert float(method.blend_alpha) == pytest.approx(0.9)  # capped
    assert method.after_step(0, "pretrain", None) == {}


def test_curriculum_state_survives_resume(hr_folder: Path, tmp_path: Path) -> None:
    # threshold 0: every validation updates σ and α, so the value at each step shows how many were kept
    whole = tiny(hr_folder, nmd=6, curriculum_threshold=0.0)
    Trainer(parse_train_config(whole), tmp_path / "whole", progress=False).run()
    cut = tiny(hr_folder, nmd=4, curriculum_threshold=0.0)
    Trainer(parse_train_config(cut), tmp_path / "cut", progress=False).run()
    at_cut = weights_at(tmp_path / "cut", 4)
    assert float(at_cut["method.noise_sigma"]) == pytest.approx(0.1 * 0.8**2)
    assert float(at_cut["method.blend_alpha"]) == pytest.approx(0.7)
    Trainer(parse_train_config(whole), tmp_path / "cut", resume=True, progress=False).run()
    resumed, reference = weights_at(tmp_path / "cut", 6), weights_at(tmp_path / "whole", 6)
    assert float(resumed["method.noise_sigma"]) == pytest.approx(0.1 * 0.8**3)
    assert float(resumed["method.blend_alpha"]) == pytest.approx(0.8)
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():  # NMD weights and the accuracy histories: bit-identical
        assert torch.equal(resumed[key], value), key


def test_each_phase_trains_only_its_networks_with_finite_losses(hr_folder: Path, tmp_path: Path) -> None:
    config = tiny(hr_folder, nmd=2, pretrain=2, gan=2)
    trainer = Trainer(parse_train_config(config), tmp_path / "run", progress=False)
    from perceptsr.engine.train import collect_weights

    start = {k: v.clone() for k, v in collect_weights(trainer.method, None).items()}
    run = tmp_path / "run"
    assert trainer.run()
    after_nmd, after_pretrain, after_gan = (weights_at(run, s) for s in (2, 4, 6))
    assert moved(start, after_nmd, "discriminators.nmd")
    assert not moved(start, after_nmd, "generator") and not moved(start, after_nmd, "discriminators.image")
    assert moved(after_nmd, after_pretrain, "generator")
    assert not moved(after_nmd, after_pretrain, "discriminators.nmd")
    assert not moved(after_nmd, after_pretrain, "discriminators.image")
    assert moved(after_pretrain, after_gan, "generator") and moved(after_pretrain, after_gan, "discriminators.image")
    assert not moved(after_pretrain, after_gan, "discriminators.nmd")
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    terms = [{k: v for k, v in r.items() if k.startswith(("g_", "d_"))} for r in logs]
    assert [set(t) for t in terms] == [{"d_nmd"}] * 2 + [{"g_l1"}] * 2 + [
        {"g_l1", "g_naturalness", "g_adversarial", "d_adversarial"}] * 2
    assert all(np.isfinite(v) and v > 0 for t in terms for v in t.values())
    assert logs[1]["nmd_val_noise_accuracy"] >= 0 and logs[0]["nmd_sigma"] == pytest.approx(0.1)


def test_nmd_batches_and_config_checks(hr_folder: Path) -> None:
    config = parse_train_config(tiny(hr_folder, nmd=1)).model
    method = NatSR(config)
    hr = torch.rand(8, 3, 32, 32)
    from perceptsr.data.resize import degrade

    batch = method.prepare(Batch(degrade(hr, 4), hr), "nmd", torch.Generator().manual_seed(0))
    images, labels = batch.extras["nmd_input"], batch.extras["nmd_label"]
    assert labels.flatten().tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert torch.equal(images[4:], hr[4:]) and not torch.equal(images[:4], hr[:4])
    noise = (images[:2] - hr[:2]).square().mean()
    assert noise.item() == pytest.approx(0.01 * 15 / 64, rel=0.3)  # σ² spread over 15 of 64 coefficients
    assert method.make_sr(batch, "nmd") is None
    with pytest.raises(ConfigError, match="nmd_init"):
        parse_train_config(tiny(hr_folder, gan=2))
    with pytest.raises(ConfigError, match="trains"):
        parse_train_config(tiny(hr_folder, nmd=1, phases={"nmd": {"iterations": 1, "trains": ["generator"]}}))


# --- TensorFlow conversion ----------------------------------------------------------------------------------


def _conv_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """TF conv2d, NHWC × HWIO, stride 1, SAME (odd kernels), float64."""
    k = kernel.shape[0]
    padded = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    h, w = x.shape[1:3]
    out = sum(padded[:, dy : dy + h, dx : dx + w] @ kernel[dy, dx] for dy in range(k) for dx in range(k))
    return out + bias


def _depth_to_space(x: np.ndarray, r: int) -> np.ndarray:
    """tf.depth_to_space: output[n, h·r+i, w·r+j, c] = input[n, h, w, (i·r+j)·C + c]."""
    n, h, w, depth = x.shape
    return x.reshape(n, h, w, r, r, depth // (r * r)).transpose(0, 1, 3, 2, 4, 5).reshape(n, h * r, w * r, -1)


def _frsr_tf_reference(tf: dict[str, np.ndarray], lr: np.ndarray, cfg: FRSRConfig) -> np.ndarray:
    """JWSoh/NatSR:model.py FRACTAL, written out in numpy with TF semantics (NHWC)."""
    def conv(x: np.ndarray, name: str) -> np.ndarray:
        return _conv_same(x, tf[f"{name}/conv2d/kernel"].astype(np.float64), tf[f"{name}/conv2d/bias"])

    def group(x: np.ndarray, g: int) -> np.ndarray:
        size = cfg.num_block // 4
        for b in range(g * size, (g + 1) * size):
            features = [x]
            for k in range(cfg.num_layer):
                features.append(np.maximum(conv(np.concatenate(features, -1), f"GEN/Block{b}/conv{k}"), 0))
            x = x + 0.1 * conv(np.concatenate(features, -1), f"GEN/Block{b}/conv_fusion")
        return x

    c1 = conv(lr, "GEN/conv1")
    c2 = group(c1, 0) + c1
    c3 = group(c2, 1) + c2 + c1
    c4 = group(c3, 2) + c3
    c5 = group(c4, 3) + c4 + c3 + c1
    x = conv(c5, "GEN/conv2") + c1
    if cfg.scale == 4:
        x = _depth_to_space(conv(_depth_to_space(conv(x, "GEN/conv_up1"), 2), "GEN/conv_up2"), 2)
    else:
        x = _depth_to_space(conv(x, "GEN/conv_up1"), cfg.scale)
    return conv(x, "GEN/conv_out")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_tf_checkpoint_converts_to_frsr_matching_tf_semantics(scale: int) -> None:
    torch.manual_seed(scale)
    source = FRSR(FRSRConfig(scale=scale, num_feat=4, num_block=4, num_layer=2))
    with torch.no_grad():
        for param in source.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    tf = _frsr_to_tf(source)
    tf.update({"GEN/conv1/conv2d/kernel/Adam": tf["GEN/conv1/conv2d/kernel"], "global_step": np.array(5),
               "DIS/conv1_1/kernel": np.zeros((3, 3, 3, 2), np.float32)})
    converted = convert_state(tf)
    assert converted.arch == "frsr" and converted.config == source.config
    model = FRSR(converted.config)
    model.load_state_dict(converted.state_dict, strict=True)
    lr = np.random.default_rng(scale).random((1, 5, 6, 3))
    with torch.no_grad():
        ours = model(torch.from_numpy(lr).permute(0, 3, 1, 2).float()).permute(0, 2, 3, 1).numpy()
    reference = _frsr_tf_reference(tf, lr, converted.config)
    assert ours.shape == reference.shape == (1, 5 * scale, 6 * scale, 3) and np.abs(reference).max() > 0.1
    assert_paths_close(ours, reference, depth=network_depth(model), what="ours vs TF semantics")


def test_nmd_checkpoint_feeds_training_not_a_release(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = NMD(NMDConfig(num_feat=2))
    names = [f"conv{s}_{k}" for s in range(1, 5) for k in (1, 2)] + ["conv5_1"]
    tf = {f"CLASSIFIER/{n}/conv2d/{p}": _to_tf(source.state_dict()[f"{n}.{q}"])
          for n in names for p, q in (("kernel", "weight"), ("bias", "bias"))}
    tf.update({"alpha": np.float32(0.9), "noise_sigma": np.float32(0.0215), "global_step": np.int32(10),
               "CLASSIFIER/conv1_1/conv2d/kernel/Adam_1": tf["CLASSIFIER/conv1_1/conv2d/kernel"]})
    config, state, extras = convert_nmd_tf(tf)
    assert config == source.config and extras == pytest.approx({"alpha": 0.9, "noise_sigma": 0.0215})
    assert all(torch.equal(state[k], v) for k, v in source.state_dict().items())
    with pytest.raises(CheckpointError, match="nmd_init"):
        convert_frsr_tf(tf)
    np.savez(tmp_path / "nmd.npz", **tf)
    loaded = load_nmd_state(tmp_path / "nmd.npz")
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())
    method = NatSR(NatSRConfig(generator=FRSRConfig(num_feat=4), nmd=NMDConfig(num_feat=2), discriminator=SMALL_D,
                               nmd_init=str(tmp_path / "nmd.npz")))
    method.build_losses()  # the trainer loads nmd_init here, never an export
    assert all(torch.equal(method.discriminators["nmd"].state_dict()[k], v) for k, v in source.state_dict().items())
    with pytest.raises(CheckpointError, match="does not fit"):
        NatSR(NatSRConfig(generator=FRSRConfig(num_feat=4), nmd=NMDConfig(num_feat=4), discriminator=SMALL_D,
                          nmd_init=str(tmp_path / "nmd.npz"))).build_losses()


def test_tf_prefix_needs_tensorflow(tmp_path: Path) -> None:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        (tmp_path / "NatSR.index").write_bytes(b"")
        with pytest.raises(InputError, match="install tensorflow-cpu"):
            read_checkpoint(tmp_path / "NatSR")
    else:
        pytest.skip("TensorFlow is installed here")


# --- the bundled perceptual model ---------------------------------------------------------------------------


def test_bundled_natsr_x4_is_more_natural_than_the_psnr_model(shared: callable) -> None:
    """The issue's target on BSD100's first 10 images: NIQE clearly below srresnet-x4, Y-PSNR within 1.5 dB."""
    from perceptsr.evaluation.evaluate import evaluate
    from perceptsr.zoo.models import bundled_path, load_model

    bsd100 = shared("data/BSD100")
    if bundled_path("natsr-x4") is None or bundled_path("srresnet-x4") is None:
        pytest.skip("the bundled models are not installed in this copy")
    scores = {name: evaluate(load_model(name), bsd100, scale=4, metrics=("psnr", "niqe"), max_images=10,
                             progress=False).mean for name in ("natsr-x4", "srresnet-x4")}
    natsr, psnr_model = scores["natsr-x4"], scores["srresnet-x4"]
    assert natsr["niqe"] < psnr_model["niqe"] - 0.5, scores
    assert natsr["psnr"] > psnr_model["psnr"] - 1.5, scores
