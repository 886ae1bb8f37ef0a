"""Fast inference paths (perceptsr.inference.fast) and `perceptsr bench`.

About the Set5 quality check (the issue's bar: bf16 may cost at most 0.05 dB of Y-PSNR against HR). The drop
in dB is 10*log10(1 + d/m): d the mean square bf16-vs-fp32 difference, m the model's own error. It only means
something for a model whose m is small, i.e. a trained one: a random model's error is so large that any
rounding vanishes in it (and a fresh MSRResNet is bilinear plus a near-zero residual, so bf16 barely touches
it). So the check that matters runs on each bundled model present (trained weights), comparing fp32 with bf16
directly. What is tested without one is the guard that makes `auto` safe for any model: `auto` keeps bf16 only
when its output matches fp32 (speed.PROBE_MIN_PSNR), so a model whose bf16 output would lose > 0.05 dB gets fp32
and loses nothing. The "fragile" case is such a model (1x1 convs whose huge intermediate values lose their low
digits in bf16); "fresh-msrresnet" only shows the machinery runs on a real architecture.
"""

from __future__ import annotations

import copy
import json
import logging
import platform
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import ENV, run_cli
from tolerance import assert_paths_close, bf16_runs, native_bf16, needs_bf16, network_depth, precisions, rounding_layers
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from perceptsr.archs import ARCHS
from perceptsr.inference import fast as speed
from perceptsr.inference.bench import build_arch, example_input
from perceptsr.zoo.models import BUNDLED, bundled_path, load_model

MAX_DROP_DB = 0.05


class Fragile(nn.Module):
    """x4 bilinear SR through 1x1 convs that take every pixel to ~5000 and back: exact in fp32 (spacing 5e-4
    there), but bf16 keeps only 8 significant bits (spacing 32), so the output gains noise of rms ~0.009."""

    def __init__(self) -> None:
        super().__init__()
        self.scale, self.condition_scales = 4, {}
        self.up, self.down = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.up.weight.copy_(torch.eye(3).view(3, 3, 1, 1) * 1000)
            self.up.bias.fill_(5000)
            self.down.weight.copy_(torch.eye(3).view(3, 3, 1, 1) / 1000)
            self.down.bias.fill_(-5)

    def forward(self, lr: Tensor) -> Tensor:
        return F.interpolate(self.down(self.up(lr)).float(), scale_factor=4, mode="bilinear", align_corners=False)


class NaNInReducedPrecision(nn.Module):
    """A 1x1 conv that returns NaN whenever it ran in reduced precision (as some fp16 models overflow)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale, self.condition_scales = 1, {}
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, lr: Tensor) -> Tensor:
        out = self.conv(lr)
        return out * float("nan") if out.dtype != torch.float32 else out


def test_bench_quick_json_follows_the_contract() -> None:
    done = run_cli("bench", "--quick", "--json", "--model", "msrresnet")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    roof = result["roofline_gflops"]
    has_bf16 = bf16_runs()  # else every bf16 figure is null (AVX2-only CPUs)
    assert set(roof) >= {"fp32", "bf16"} and roof["fp32"] > 0
    assert roof["bf16"] > 0 if has_bf16 else roof["bf16"] is None
    assert list(result["models"]) == ["msrresnet"]
    model = result["models"]["msrresnet"]
    assert model["fp32_gflops"] > 0
    assert model["fp32_roofline_fraction"] == pytest.approx(model["fp32_gflops"] / roof["fp32"], rel=1e-2)
    assert set(model["speedup_vs_eager_fp32"]) == {"fp32", "bf16"}
    speedups = [v for k, v in model["speedup_vs_eager_fp32"].items() if has_bf16 or k == "fp32"]
    assert all(isinstance(v, float) and v > 0 for v in speedups)
    assert model["peak_rss_mb"] > 50  # a Python process with torch loaded, at least
    if has_bf16:  # the ceiling: eager time x bf16 roofline / FLOPs, at least the bf16 path's speed-up at its fraction
        ceiling, bf16 = model["bf16_speedup_ceiling"], model["speedup_vs_eager_fp32"]["bf16"]
        assert ceiling == pytest.approx(bf16 / model["bf16_roofline_fraction"], rel=2e-2)
    tiling = result["tiling"]
    assert tiling["input"] == "128x128" and tiling["scale"] == 4
    assert tiling["peak_rss_mb"] > 50
    assert 0 <= tiling["max_tile_diff"] < 1 / 255
    end = result["end_to_end"]
    assert set(end) >= {"images", "megapixels_out", "seconds", "images_per_s", "forward_seconds", "fraction_of_forward"}
    assert end["images"] == 8 and all(isinstance(end[k], float) and end[k] > 0 for k in
                                      ("megapixels_out", "seconds", "images_per_s", "forward_seconds"))
    assert end["fraction_of_forward"] == pytest.approx(end["forward_seconds"] / end["seconds"], rel=1e-2)
    assert set(result["training"]) == {"srgan", "esrgan"}
    for method in result["training"].values():
        assert set(method["its_per_s"]) == {"eager_fp32", "fast"}
        assert all(isinstance(v, float) and v > 0 for v in method["its_per_s"].values())
        assert method["speedup"] == pytest.approx(method["its_per_s"]["fast"] / method["its_per_s"]["eager_fp32"],
                                                  rel=1e-2)
        assert 0 <= method["loader_fraction"] < 1


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc setting is glibc's")
@pytest.mark.parametrize(("preset", "expected"), [(None, "1 True"), ("0", "0 False")])
def test_allocator_configure_sets_both_unless_told_not_to(preset: str | None, expected: str) -> None:
    env = {k: v for k, v in ENV.items() if k not in ("THP_MEM_ALLOC_ENABLE", "PERCEPTSR_KEEP_FREED_MEMORY")}
    if preset is not None:
        env.update(THP_MEM_ALLOC_ENABLE=preset, PERCEPTSR_KEEP_FREED_MEMORY=preset)
    code = "import os; from perceptsr.inference import allocator; allocator.configure(); " \
           "print(os.environ['THP_MEM_ALLOC_ENABLE'], allocator.keep_freed_memory())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == expected


def test_cli_sets_up_the_allocator_for_inference_commands_only(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    from perceptsr.cli import main as cli
    from perceptsr.inference import allocator

    calls: list[str] = []
    monkeypatch.setattr(allocator, "configure", lambda: calls.append("configured"))
    assert cli.main(["upscale", str(tmp_path / "missing.png"), "-o", str(tmp_path / "out")]) == 2
    assert calls == ["configured"]
    assert cli.main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert calls == ["configured"]  # training keeps the allocator's defaults


def test_bf16_where_the_cpu_has_no_bf16_convolutions(monkeypatch: pytest.MonkeyPatch) -> None:
    """AVX2-only CPUs: oneDNN has no bf16 convolutions, so an explicit bf16 is one clear error (it used to be a
    RuntimeError traceback from the fused conv) and the bench times fp32 alone, its bf16 figures null."""
    from perceptsr.inference import bench

    cpu = torch.device("cpu")
    monkeypatch.setattr(speed, "bf16_supported", lambda device: False)
    monkeypatch.setattr(bench, "bf16_supported", lambda device: False)
    monkeypatch.setattr(speed, "native_reduced_precision", lambda device: None)
    with pytest.raises(speed.InputError, match="bf16 is not supported on this cpu.*use fp32 or auto"):
        speed.resolve_precision("bf16", cpu)
    assert speed.resolve_precision("auto", cpu) == "fp32"
    result = bench.bench_model("msrresnet", bench.QUICK, compile=False)
    assert result["fp32_roofline_fraction"] > 0 and result["roofline_gflops"]["bf16"] is None
    assert result["speedup_vs_eager_fp32"]["bf16"] is None and result["bf16_roofline_fraction"] is None
    assert not any(name.startswith("bf16") or name == "roofline bf16" for name in result["ms"])
    assert bench._num(None, "7.2f") == "      -" and bench._num(1.5, "7.2f") == "   1.50"


def test_auto_picks_fp32_where_bf16_is_not_native(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(speed, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert speed.native_reduced_precision(cpu) is None
    assert speed.resolve_precision("auto", cpu) == "fp32"
    assert speed.prepare(build_arch("msrresnet", tiny=True), precision="auto").precision == "fp32"
    monkeypatch.setattr(speed, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))
    expected = "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    assert speed.native_reduced_precision(cpu) == expected
    assert speed.resolve_precision("fp32", cpu) == "fp32"


def test_unknown_precision_is_an_input_error() -> None:
    from perceptsr.errors import InputError

    with pytest.raises(InputError, match="precision"):
        speed.resolve_precision("int8", torch.device("cpu"))


@needs_bf16
def test_nan_in_reduced_precision_falls_back_to_fp32(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = NaNInReducedPrecision()
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        expected = model(lr)
    fast = speed.prepare(model, precision="bf16")
    with caplog.at_level(logging.WARNING, logger="perceptsr.inference.fast"):
        out = fast(lr)
    assert torch.isfinite(out).all()
    assert_paths_close(out, expected, depth=network_depth(model), what="fp32 rerun vs eager")
    assert fast.precision == "fp32"
    assert any("NaN" in r.message for r in caplog.records)


@pytest.mark.parametrize("precision", precisions("fp32", "bf16"))
@pytest.mark.parametrize("arch", [name for name in ARCHS if name != "bicubic"])
def test_fast_path_equals_eager(arch: str, precision: str) -> None:
    eager = build_arch(arch, tiny=True)
    generator = torch.Generator().manual_seed(1)
    for module in eager.modules():  # trained-looking BN statistics, so folding BN into convs is really tested
        if isinstance(module, nn.BatchNorm2d):
            for tensor in (module.running_mean, module.weight, module.bias):
                tensor.data.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
            module.running_var.data.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    lr, conditions = example_input(eager, 12)
    with torch.no_grad():
        expected = eager(lr, **conditions)
    fast = speed.prepare(copy.deepcopy(eager), precision=precision)
    assert fast.precision == precision
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.model.modules())
    if torch.backends.mkldnn.is_available():  # the network traced, so the CPU rewrites happened
        from perceptsr.inference.fusion import FusedConv

        assert any(isinstance(m, FusedConv) for m in fast.model.modules())
    out = fast(lr, **conditions)
    assert out.is_contiguous() and out.dtype == torch.float32
    assert expected.abs().max() > 0.01  # a real output, not zeros
    # fp32: NHWC kernels sum in another order; bf16: every layer's inputs and output are rounded to 8 bits
    depth = network_depth(eager) if precision == "fp32" else rounding_layers(eager)
    assert_paths_close(out, expected, dtype=precision, depth=depth, what=f"{arch} {precision} fast vs eager")


def test_fusion_folds_bn_and_fuses_what_follows_convs() -> None:
    from perceptsr.inference.fusion import ConcatTailConv, FusedConv

    msrresnet = speed.prepare(build_arch("msrresnet", tiny=True), precision="fp32").model
    fused = {name: m for name, m in msrresnet.named_modules() if isinstance(m, FusedConv)}
    if torch.backends.mkldnn.is_available():
        # conv_first, conv_hr and the two upsampling convs take their LeakyReLU, each block's conv1 its ReLU
        assert sorted(m.activation[0] for m in fused.values() if m.activation) == ["leaky_relu"] * 4 + ["relu"] * 2
        assert [name for name, m in fused.items() if m.shuffle == 2] == ["tail.layers.upconv1", "tail.layers.upconv2"]
        assert "body.0.conv2" in fused and "+" not in msrresnet.code.split("body_1_conv1")[0]  # residual add fused
        rrdb = speed.prepare(build_arch("rrdb", tiny=True), precision="fp32").model
        conv5 = rrdb.get_submodule("body.0.rdb1.conv5")  # x + 0.2 * conv5(cat(...)): 0.2 in the weights, split
        assert isinstance(conv5, ConcatTailConv)
        torch.testing.assert_close(torch.cat([conv5.head.weight, conv5.tail.weight], 1),
                                   build_arch("rrdb", tiny=True).body[0].rdb1.conv5.weight * 0.2)
    srresnet = speed.prepare(build_arch("srresnet", tiny=True), precision="fp32").model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in srresnet.modules())
    source = build_arch("msrresnet", tiny=True)
    speed.prepare(source, precision="fp32")
    assert type(source.conv_first) is nn.Conv2d  # the caller's model is left as it was


@pytest.mark.parametrize("precision", precisions("fp32", "bf16"))
def test_dense_block_convs_read_the_concatenation_made_for_the_conv_before(precision: str) -> None:
    """FRSR's dense blocks: every other conv and the 1x1 fusion conv run as ConcatTailConv; fewer copies, same
    output."""
    from perceptsr.archs.natsr import FRSR, FRSRConfig
    from perceptsr.inference.fusion import ConcatTailConv

    if not torch.backends.mkldnn.is_available():
        pytest.skip("the CPU rewrites need oneDNN")
    torch.manual_seed(0)
    eager = FRSR(FRSRConfig(scale=2, num_feat=8, num_block=4, num_layer=5)).eval()
    fast = speed.prepare(copy.deepcopy(eager), precision=precision)
    split = sorted(name.split(".", 2)[2] for name, m in fast.model.named_modules()
                   if isinstance(m, ConcatTailConv) and name.startswith("blocks.0."))
    assert split == ["conv_fusion", "convs.1", "convs.3"]  # their prefixes: x, cat(x, f1, f2), cat(x, ..., f4)
    cats = [n for n in fast.model.graph.nodes if n.target is torch.cat]
    assert len(cats) == 2 * 4 and all(len(n.args[0]) > 1 for n in cats)  # was 6 a block, one of them of x alone
    lr = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = eager(lr)
    depth = network_depth(eager) if precision == "fp32" else rounding_layers(eager)
    assert_paths_close(fast(lr), expected, dtype=precision, depth=depth, what=f"frsr {precision} split vs eager")


@pytest.mark.parametrize("shuffle, activation", [(2, None), (2, ("leaky_relu", 0.2)), (3, ("relu", 0.0))])
def test_fused_conv_equals_the_ops_it_replaces(shuffle: int, activation: tuple[str, float] | None) -> None:
    from perceptsr.inference.fusion import FusedConv

    generator = torch.Generator().manual_seed(shuffle)
    conv = nn.Conv2d(8, 4 * shuffle**2, 3, padding=1)
    x = torch.randn(2, 8, 7, 5, generator=generator).contiguous(memory_format=torch.channels_last)
    other = torch.randn(2, 4 * shuffle**2, 7, 5, generator=generator)
    acts = {None: lambda y: y, "relu": F.relu, "leaky_relu": lambda y: F.leaky_relu(y, 0.2)}
    act = acts[activation and activation[0]]
    depth = network_depth(conv)
    with torch.inference_mode():
        shuffled = FusedConv(conv, activation=activation, shuffle=shuffle)(x)
        assert_paths_close(shuffled, act(F.pixel_shuffle(conv(x), shuffle)), depth=depth, what="conv+shuffle+act")
        residual = FusedConv(conv, scale=0.2)
        tolerance = assert_paths_close(residual(x, other), conv(x) * 0.2 + other, depth=depth,
                                       what="0.2 * conv + other")
        assert_paths_close(residual(x, other[:, :1]), conv(x) * 0.2 + other[:, :1], depth=depth,
                           what="0.2 * conv + a broadcast other")
        assert (conv(x) * 0.25 + other - residual(x, other)).abs().max() > 100 * tolerance  # a wrong scale fails


@pytest.mark.parametrize("precision", precisions("bf16"))
def test_fused_conv_under_reduced_precision(precision: str) -> None:
    """fp32 `other` under autocast: the separate ops, as eager; a reduced `other`: the fused op, in that dtype."""
    from perceptsr.inference.fusion import FusedConv

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    generator = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    x = torch.randn(2, 8, 7, 5, generator=generator).contiguous(memory_format=torch.channels_last)
    other = torch.randn(2, 16, 7, 5, generator=generator)
    residual = FusedConv(conv, scale=0.2)
    with torch.inference_mode():
        exact = conv(x) * 0.2 + other
        with torch.autocast("cpu", dtype=dtype):
            mixed, expected = residual(x, other), conv(x) * 0.2 + other
            assert mixed.dtype == expected.dtype == torch.float32
            half = residual(x, other.to(dtype))
        assert half.dtype == dtype
        assert_paths_close(mixed, expected, dtype=precision, what=f"{precision} mixed vs separate ops")
        tolerance = assert_paths_close(half.float(), exact, dtype=precision, what=f"{precision} fused vs fp32")
        assert (conv(x) * 0.25 + other - exact).abs().max() > 1.5 * tolerance  # a wrong scale still fails


@pytest.mark.parametrize("scale, act", [(2, "prelu"), (2, "prelu1"), (3, "leaky"), (2, "none")])
def test_polyphase_narrow_conv_after_an_upsampler_equals_eager(scale: int, act: str) -> None:
    from perceptsr.inference.fusion import FusedConv

    torch.manual_seed(scale)
    activation = {"prelu": nn.PReLU(16, init=0.3), "prelu1": nn.PReLU(), "leaky": nn.LeakyReLU(0.2),
                  "none": nn.Identity()}[act]
    if isinstance(activation, nn.PReLU):
        activation.weight.data.uniform_(-0.5, 0.5)  # a different slope per channel, some negative
    net = nn.Sequential(nn.Conv2d(16, 16 * scale**2, 3, padding=1), nn.PixelShuffle(scale), activation,
                        nn.Conv2d(16, 3, 9, padding=4))
    net.scale = scale
    x = torch.rand(1, 16, 11, 7)
    with torch.no_grad():
        expected = net(x)
    fast = speed.prepare(copy.deepcopy(net), precision="fp32")
    assert_paths_close(fast(x), expected, depth=network_depth(net), what="polyphase vs eager")
    if torch.backends.mkldnn.is_available():
        kept = [m for m in fast.model.modules() if isinstance(m, FusedConv) and m.shuffle > 1 and not m.unshuffle]
        assert len(kept) == 1  # the HR map of 16 channels is never shuffled out


class _UpsampleThenConv(nn.Module):
    """F.interpolate(x, scale_factor=2, mode="nearest") -> conv [-> activation], as RRDBNet's upsampling stages."""

    def __init__(self, kernel: int, activation: nn.Module) -> None:
        super().__init__()
        self.conv, self.act, self.scale = nn.Conv2d(16, 8, kernel, padding=kernel // 2), activation, 2

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(F.interpolate(x, scale_factor=2, mode="nearest")))


@pytest.mark.parametrize("form, kernel, act", [("function", 3, "leaky"), ("function", 3, "none"),
                                               ("module", 3, "relu"), ("function", 5, "leaky")])
def test_nearest_upsampling_and_conv_run_as_phase_convs_on_the_lr_map(form: str, kernel: int, act: str) -> None:
    """nearest x2 + 3x3 conv (+ activation) -> NearestUpsampleConv, equal to eager at every border and phase
    (odd sizes, batch of 2); a 5x5 conv is left as it is."""
    from perceptsr.inference.fusion import NearestUpsampleConv

    torch.manual_seed(kernel)
    activation = {"leaky": nn.LeakyReLU(0.2), "relu": nn.ReLU(), "none": nn.Identity()}[act]
    if form == "module":
        net = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(16, 8, kernel, padding=1),
                            activation)
        net.scale = 2
    else:
        net = _UpsampleThenConv(kernel, activation)
    x = torch.randn(2, 16, 7, 5)
    with torch.no_grad():
        expected = net(x)
    fast = speed.prepare(copy.deepcopy(net), precision="fp32")
    out = fast(x)
    assert out.shape == (2, 8, 14, 10) and expected.abs().max() > 0.1
    assert_paths_close(out, expected, depth=network_depth(net), what=f"{form} nearest x2 + conv{kernel} vs eager")
    if torch.backends.mkldnn.is_available():
        rewritten = [m for m in fast.model.modules() if isinstance(m, NearestUpsampleConv)]
        assert len(rewritten) == (kernel == 3)
        if rewritten and act != "none":  # the activation went into the phase conv as its post-op
            assert rewritten[0].phases.activation is not None
            assert not any(type(m) in (nn.ReLU, nn.LeakyReLU) for m in fast.model.modules())


class _Conditioned(nn.Module):
    """An FxSR-like use of SFT layers: a condition net ending in a widening 1x1 conv feeds two SFT layers."""

    def __init__(self, plus_one: bool, widen: bool) -> None:
        from perceptsr.archs.blocks import SFTLayer

        super().__init__()
        self.scale, self.condition_scales = 1, {"t": 1}
        width = 1 if widen else 6
        self.cond_net = nn.Sequential(nn.Conv2d(1, width, 1), nn.LeakyReLU(0.1), nn.Conv2d(width, 6, 1))
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.sft_a, self.sft_b = (SFTLayer(8, 6, plus_one=plus_one, negative_slope=0.1 if plus_one else 0.01)
                                  for _ in range(2))
        self.out = nn.Conv2d(8, 3, 3, padding=1)
        for module in self.modules():  # SFT convs start near zero in real models; random ones test more
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.5)
                nn.init.normal_(module.bias, std=0.5)

    def forward(self, lr: Tensor, t: Tensor) -> Tensor:
        cond = self.cond_net(t)
        return self.out(self.sft_b(F.relu(self.sft_a(self.conv(lr), cond)), cond))


@pytest.mark.parametrize("precision", precisions("fp32", "bf16"))
@pytest.mark.parametrize("plus_one, widen, uniform", [(True, True, False), (True, True, True), (False, False, False)])
def test_sft_layers_run_as_two_convs_and_an_addcmul(plus_one: bool, widen: bool, uniform: bool,
                                                     precision: str) -> None:
    from perceptsr.inference.fusion import FastSFT

    torch.manual_seed(3)
    net = _Conditioned(plus_one, widen).eval()
    lr = torch.rand(2, 3, 10, 7)
    t = torch.full((2, 1, 1, 1), 0.3) if uniform else torch.rand(2, 1, 10, 7)
    with torch.no_grad():
        expected = net(lr, t)
    fast = speed.prepare(copy.deepcopy(net), precision=precision)
    out = fast(lr, t=t)
    depth = network_depth(net) if precision == "fp32" else rounding_layers(net)
    assert_paths_close(out, expected, dtype=precision, depth=depth, what=f"SFT {precision} fast vs eager")
    if torch.backends.mkldnn.is_available():
        fast_sfts = [m for m in fast.model.modules() if isinstance(m, FastSFT)]
        assert len(fast_sfts) == 2
        # the widening 1x1 conv (1 -> 6 channels) is folded into both layers, which then read its 1-channel input
        assert all(m.hidden.weight.shape[1] == (1 if widen else 6) for m in fast_sfts)
        assert ("cond_net_2" in fast.model.code) is not widen


@pytest.mark.parametrize("precision", precisions("fp32", "bf16"))
@pytest.mark.parametrize("kernel, out_channels, bias", [(3, 3, True), (9, 3, True), (3, 1, False), (5, 4, True)])
def test_row_block_conv_equals_the_conv(kernel: int, out_channels: int, bias: bool, precision: str) -> None:
    from perceptsr.inference.fusion import RowBlockConv, fuse_for_inference

    generator = torch.Generator().manual_seed(kernel)
    conv = nn.Conv2d(16, out_channels, kernel, padding=kernel // 2, bias=bias)
    for height, width in ((8, 8), (13, 7), (1, 5), (30, 31)):  # heights that 4 divides and that it does not
        x = torch.randn(2, 16, height, width, generator=generator)
        with torch.inference_mode():
            expected = conv(x)
            if precision == "fp32":
                out = RowBlockConv(conv, 4)(x)
            else:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = RowBlockConv(conv, 4)(x)
                assert out.dtype == torch.bfloat16
        assert out.shape == expected.shape
        depth = network_depth(conv) if precision == "fp32" else 1
        assert_paths_close(out.float(), expected, dtype=precision, depth=depth, what=f"{height}x{width} rows")
    wide = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), conv)
    rewritten = [type(m) for m in fuse_for_inference(wide, activations=True).modules()]
    if torch.backends.mkldnn.is_available():
        assert rewritten.count(RowBlockConv) == 1  # only the narrow conv; the 16->8 one is left


def test_in_place_prelu_equals_prelu_and_only_replaces_a_prelu_nothing_else_reads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from perceptsr.inference.fusion import InPlacePReLU, fuse_for_inference

    monkeypatch.setattr(InPlacePReLU, "BAND_BYTES", 4 << 20)
    prelu = nn.PReLU(64)
    prelu.weight.data.uniform_(-0.5, 1.5)  # slopes of both signs and above 1
    x = torch.randn(2, 64, 131, 127).contiguous(memory_format=torch.channels_last)  # 8.5 MB: in 3 bands
    assert x.numel() * 4 > 2 * InPlacePReLU.BAND_BYTES
    expected = F.prelu(x, prelu.weight).detach()
    with torch.inference_mode():
        y = x.clone()
        out = InPlacePReLU(prelu)(y)
        assert out.data_ptr() == y.data_ptr()  # overwritten, not copied
        torch.testing.assert_close(out, expected, rtol=0, atol=0)  # the same elementwise op: exact
    x.requires_grad_(True)
    assert InPlacePReLU(prelu)(x) is not x  # while autograd records: the plain prelu, input untouched

    class Both(nn.Module):  # the second conv's output is read twice: its PReLU must not overwrite it
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.act_a, self.act_b = nn.PReLU(8), nn.PReLU(8)

        def forward(self, x: Tensor) -> Tensor:
            h = self.b(self.act_a(self.a(x)))
            return self.act_b(h) + h

    rewritten = fuse_for_inference(Both(), activations=True)
    if torch.backends.mkldnn.is_available():
        assert type(rewritten.act_a) is InPlacePReLU and type(rewritten.act_b) is nn.PReLU


@pytest.mark.parametrize("precision", precisions("fp32", "bf16"))
@pytest.mark.parametrize("arch", [name for name in ARCHS if name != "bicubic"])
def test_upsampling_tail_in_bands_equals_the_whole_tail(monkeypatch: pytest.MonkeyPatch, arch: str,
                                                        precision: str) -> None:
    """Bands of a few rows (each layer's halo rows recomputed per band) give the rows the whole maps give, for
    every architecture, two samples and a height no band size divides."""
    from perceptsr.inference.bands import BandedTail

    eager = build_arch(arch, tiny=True)
    fast = speed.prepare(copy.deepcopy(eager), precision=precision)
    tails = [m for m in fast.model.modules() if isinstance(m, BandedTail)]
    if not torch.backends.mkldnn.is_available():
        pytest.skip("the CPU rewrites need oneDNN")
    assert len(tails) == 1 and tails[0].factor == eager.scale  # every upsampler is in the tail
    lr, conditions = example_input(eager, 13)
    lr, conditions = torch.cat([lr, lr.flip(-1)]), {k: torch.cat([v, v.flip(-1)]) for k, v in conditions.items()}
    whole = []
    monkeypatch.setattr(BandedTail, "forward", lambda self, x: whole.append(x.shape) or self._whole(x))
    expected = fast(lr, **conditions)
    monkeypatch.undo()
    monkeypatch.setattr(BandedTail, "BAND_BYTES", 1)
    monkeypatch.setattr(BandedTail, "MIN_ROWS", 3)  # 3 input rows -> 3 * scale output rows per band: 5 bands
    calls = Counter()
    for layer in tails[0].layers.values():
        monkeypatch.setattr(layer, "forward", lambda *a, f=layer.forward, **k: calls.update([id(f)]) or f(*a, **k))
    out = fast(lr, **conditions)
    assert whole and min(calls.values()) == 2 * 5  # each layer ran once per band of each sample
    depth = network_depth(eager) if precision == "fp32" else rounding_layers(eager)
    assert_paths_close(out, expected, dtype=precision, depth=depth, what=f"{arch} {precision} banded vs whole")


@pytest.mark.parametrize("precision", precisions("bf16"))
def test_in_place_prelu_in_reduced_precision(precision: str) -> None:
    from perceptsr.inference.fusion import InPlacePReLU

    prelu = nn.PReLU(64)
    prelu.weight.data.uniform_(-0.5, 1.5)
    x = torch.randn(2, 64, 131, 127).contiguous(memory_format=torch.channels_last)
    expected = F.prelu(x, prelu.weight).detach()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        half = InPlacePReLU(prelu)(x.bfloat16())
    assert half.dtype == torch.bfloat16
    assert_paths_close(half.float(), expected, dtype=precision, what="bf16 in-place PReLU")


def test_fused_conv_returns_channels_last_even_from_a_one_channel_map() -> None:
    from perceptsr.inference.fusion import FusedConv

    conv = nn.Conv2d(1, 8, 1)
    x = torch.rand(1, 1, 9, 7)  # 1 channel: NCHW and channels-last at once, and oneDNN answers NCHW
    with torch.inference_mode():
        out = FusedConv(conv, activation=("leaky_relu", 0.1))(x)
        assert_paths_close(out, F.leaky_relu(conv(x), 0.1), depth=network_depth(conv), what="1-channel conv")
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("precision", precisions("fp32", "bf16"))
def test_fast_path_takes_a_float_condition(precision: str) -> None:
    model = build_arch("fxsr", tiny=True)
    lr = torch.rand(1, 3, 20, 17)
    with torch.no_grad():
        expected = model(lr, t=0.4)
    out = speed.prepare(model, precision=precision)(lr, t=0.4)
    depth = network_depth(model) if precision == "fp32" else rounding_layers(model)
    # bf16: the tiny net shrinks its [0, 1] input (outputs ~0.2), so the scale is the output's, not 1
    assert_paths_close(out, expected, dtype=precision, depth=depth, min_scale=0.0 if precision == "bf16" else 1.0,
                       what=f"{precision} t=0.4")


@pytest.fixture
def auto_means_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """`auto` = bf16 settled by the probe, on every CPU with bf16 convolutions (emulated where not native)."""
    if not bf16_runs():
        pytest.skip("this CPU has no bf16 convolutions (AVX2 only)")
    monkeypatch.setattr(speed, "native_reduced_precision", lambda device: "bf16")


def test_auto_probe_refuses_a_model_that_bf16_breaks(auto_means_bf16: None) -> None:
    lr = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = Fragile()(lr)
    bf16 = speed.prepare(Fragile(), precision="bf16")(lr)
    assert speed.output_psnr(bf16, expected) < speed.PROBE_MIN_PSNR - 6  # bf16 really is off
    auto = speed.prepare(Fragile(), precision="auto")
    assert auto.precision == "bf16"  # until the probe on the first call
    # fp32 rounds Fragile's ~5000 intermediates (spacing 5e-4) and divides them by 1000: a scale of 5
    assert_paths_close(auto(lr), expected, depth=network_depth(Fragile()), min_scale=5.0, what="auto after probe")
    assert auto.precision == "fp32"


def test_auto_probe_keeps_bf16_for_a_model_it_does_not_break(auto_means_bf16: None) -> None:
    model = build_arch("msrresnet", tiny=True)
    lr = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    auto = speed.prepare(model, precision="auto")
    auto(lr)
    assert auto.precision == "bf16"


def _set5_psnr(model: nn.Module, set5: Path) -> float:
    from perceptsr.evaluation.evaluate import evaluate

    return evaluate(model, set5, scale=4, metrics=("psnr",), progress=False).mean["psnr"]


@pytest.mark.parametrize("precision", precisions("bf16"))
@pytest.mark.parametrize("name", list(BUNDLED))
def test_bundled_model_keeps_set5_psnr_in_reduced_precision(precision: str, name: str, shared: callable) -> None:
    set5 = shared("data/Set5")
    if bundled_path(name) is None:
        pytest.skip(f"bundled model {name} is not installed in this copy (the guarded cases below still run)")
    model = load_model(name)
    fp32 = _set5_psnr(speed.prepare(model, precision="fp32"), set5)
    reduced = _set5_psnr(speed.prepare(model, precision=precision), set5)
    bicubic = _set5_psnr(load_model("bicubic", scale=model.scale), set5)
    assert fp32 > bicubic + 0.5  # a trained model, so the drop below is measured against a small error
    assert fp32 - reduced < MAX_DROP_DB, f"{name}: {precision} costs {fp32 - reduced:.4f} dB on Set5 (fp32 {fp32:.3f})"


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bf16, so auto is fp32 and there is no probe")
@pytest.mark.parametrize("case", ["fresh-msrresnet", "fragile"])
def test_auto_precision_keeps_set5_psnr(case: str, shared: callable) -> None:
    set5 = shared("data/Set5")
    make = Fragile if case == "fragile" else (lambda: build_arch("msrresnet", tiny=True))
    fp32 = _set5_psnr(speed.prepare(make(), precision="fp32"), set5)
    auto = _set5_psnr(speed.prepare(make(), precision="auto"), set5)
    assert fp32 > 20  # upscaled images, not zeros
    assert fp32 - auto < MAX_DROP_DB
    if case == "fragile":  # without the probe, bf16 would have failed the bar
        assert fp32 - _set5_psnr(speed.prepare(make(), precision="bf16"), set5) > MAX_DROP_DB
