"""End-to-end upscaling: the pipelined folder run (inference.upscale.upscale_files), batched tiles, the tile
choice, the tile progress bar and the PNG level. Deterministic: nothing here depends on timing."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_release, write_pngs
from PIL import Image
from tolerance import assert_paths_close, network_depth
from torch import Tensor, nn

from perceptsr.cli.main import main
from perceptsr.errors import InputError
from perceptsr.inference import tile as tiling
from perceptsr.inference import upscale
from perceptsr.inference.bench import build_arch
from perceptsr.inference.fast import prepare
from perceptsr.inference.tile import choose_tile, tiled_forward
from perceptsr.inference.upscale import RunOptions, run_in_order, tile_plan, upscale_files
from perceptsr.io.images import read_image


class TinyNet(nn.Module):
    """Two 3x3 convs and a pixel shuffle: receptive radius 2 LR pixels, taking a LR-size condition `t`."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3 * scale**2, 3, padding=1),
                                  nn.PixelShuffle(scale))

    def forward(self, lr: Tensor, t: Tensor) -> Tensor:
        return self.body(torch.cat([lr, t], 1))


def folder_of_images(folder: Path) -> list[Path]:
    """Four inputs of different sizes and kinds: RGB, grayscale, RGBA."""
    write_pngs(folder, [(23, 31), (40, 18)], seed=1, block=4)
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (17, 21), dtype=np.uint8), "L").save(folder / "im2.png")
    Image.fromarray(rng.integers(0, 256, (19, 26, 4), dtype=np.uint8), "RGBA").save(folder / "im3.png")
    return sorted(folder.iterdir())


def run_folder(tmp_path: Path, name: str, *, pipelined: bool, files: list[Path]) -> dict[str, bytes]:
    torch.manual_seed(0)
    model = prepare(build_arch("msrresnet", tiny=True), precision="fp32")
    out = tmp_path / name
    out.mkdir()
    pairs = [(path, out / path.name) for path in files]
    upscale_files(model, pairs, run=RunOptions(tile=12, tile_overlap=3), device=torch.device("cpu"),
                  conditions_for=lambda path, image: {}, max_pixels=10**6, pipelined=pipelined)
    return {path.name: path.read_bytes() for path in sorted(out.iterdir())}


def test_pipelined_folder_writes_the_bytes_of_the_plain_loop(tmp_path: Path) -> None:
    files = folder_of_images(tmp_path / "in")
    sequential = run_folder(tmp_path, "sequential", pipelined=False, files=files)
    pipelined = run_folder(tmp_path, "pipelined", pipelined=True, files=files)
    assert list(pipelined) == [p.name for p in files]
    assert pipelined == sequential


def test_cli_upscale_equals_the_plain_loop(tmp_path: Path) -> None:
    files = folder_of_images(tmp_path / "in")
    release = tiny_release(tmp_path / "model.safetensors", "msrresnet", 4)
    assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "cli"), "--model", str(release),
                 "--tile", "12", "--tile-overlap", "3", "--quiet"]) == 0
    from perceptsr.zoo.models import load_model

    model = prepare(load_model(release), precision="fp32")
    out = tmp_path / "plain"
    out.mkdir()
    upscale_files(model, [(p, out / p.name) for p in files], run=RunOptions(tile=12, tile_overlap=3),
                  device=torch.device("cpu"), conditions_for=lambda path, image: {}, max_pixels=10**6,
                  pipelined=False)
    for path in files:
        assert (tmp_path / "cli" / path.name).read_bytes() == (out / path.name).read_bytes()


@pytest.mark.parametrize("pipelined", [False, True])
def test_a_bad_input_stops_the_run_where_the_plain_loop_stops(tmp_path: Path, pipelined: bool) -> None:
    files = folder_of_images(tmp_path / "in")
    (tmp_path / "in" / "im1.png").write_bytes(b"not a png")
    with pytest.raises(InputError) as caught:
        run_folder(tmp_path, "out", pipelined=pipelined, files=files)
    assert "\n" not in str(caught.value) and "im1.png" in str(caught.value)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["im0.png"]


@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.parametrize("stage", ["read", "compute", "write"])
def test_run_in_order_fails_like_the_plain_loop(stage: str, pipelined: bool) -> None:
    written: list[int] = []

    def step(name: str, item: int) -> int:
        if name == stage and item == 2:
            raise InputError(f"{name} {item} failed")
        return item

    with pytest.raises(InputError, match=f"^{stage} 2 failed$"):
        run_in_order(range(5), lambda i: step("read", i), lambda i, d: step("compute", d),
                     lambda i, d, r: written.append(step("write", r)), pipelined=pipelined)
    assert written == [0, 1]
    assert not [t for t in threading.enumerate() if t.name.startswith("perceptsr-write")]


def test_run_in_order_keeps_order_and_two_results_at_most() -> None:
    alive: list[int] = []
    peak: list[int] = []
    written: list[int] = []

    def compute(item: int, data: int) -> int:
        alive.append(item)
        peak.append(len(alive))
        return data * 10

    def write(item: int, data: int, result: int) -> None:
        written.append(result)
        alive.remove(item)

    run_in_order(range(12), lambda i: i, compute, write)
    assert written == [i * 10 for i in range(12)]
    assert max(peak) <= 2


@pytest.mark.parametrize("batch", [2, 4, 100])
def test_batched_tiles_equal_one_tile_per_forward(batch: int) -> None:
    torch.manual_seed(0)
    model = TinyNet(2).eval()
    lr, t = torch.rand(1, 3, 29, 37), torch.rand(1, 1, 29, 37)
    calls: list[int] = []

    def counted(x: Tensor, **conditions: Tensor) -> Tensor:
        calls.append(x.shape[0])
        return model(x, **conditions)

    single = tiled_forward(counted, lr, scale=2, tile=14, overlap=3, conditions={"t": t})
    tiles = len(calls)
    calls.clear()
    batched = tiled_forward(counted, lr, scale=2, tile=14, overlap=3, conditions={"t": t}, batch=batch)
    assert tiles > 4 and sum(calls) == tiles and max(calls) == min(batch, tiles)
    assert len(calls) == -(-tiles // batch)
    assert_paths_close(batched, single, depth=network_depth(model), what=f"batch {batch}")
    with torch.no_grad():
        whole = model(lr, t=t)
    assert_paths_close(batched, whole, depth=network_depth(model), what="batched vs untiled")


def test_batched_tiles_of_a_batch_of_images() -> None:
    torch.manual_seed(0)
    model = TinyNet(2).eval()
    lr, t = torch.rand(3, 3, 20, 26), torch.rand(3, 1, 20, 26)
    single = tiled_forward(model, lr, scale=2, tile=12, overlap=2, conditions={"t": t})
    batched = tiled_forward(model, lr, scale=2, tile=12, overlap=2, conditions={"t": t}, batch=3)
    assert_paths_close(batched, single, depth=network_depth(model), what="3 images, 3 tiles per forward")


@pytest.mark.parametrize(("height", "width", "overlap", "limit"),
                         [(1000, 1000, 16, 384), (4000, 3000, 16, 384), (500, 90, 8, 128), (77, 300, 4, 64)])
def test_choose_tile_computes_the_fewest_pixels(height: int, width: int, overlap: int, limit: int) -> None:
    def computed(side: int) -> int:
        rows, cols = tiling._spans(height, side, overlap), tiling._spans(width, side, overlap)
        return len(rows) * (rows[0][1] - rows[0][0]) * len(cols) * (cols[0][1] - cols[0][0])

    side = choose_tile(height, width, overlap, limit)
    assert side is not None and side <= limit
    lowest = max(64, 2 * overlap + 8)
    assert computed(side) == min(computed(s) for s in range(min(lowest, limit), limit + 1))
    assert computed(side) < computed(limit) or side == limit
    assert choose_tile(100, 60, overlap, 128) is None


def test_tile_plan_batches_small_tiles_only() -> None:
    model = prepare(build_arch("msrresnet", tiny=True), precision="fp32")
    tile, batch = tile_plan(model, 1000, 1000, tile=None, overlap=16)
    assert tile is not None and tile <= upscale.SPEED_TILE and batch == 1
    assert tile_plan(model, 1000, 1000, tile=96, overlap=16) == (96, (upscale.SPEED_TILE // 96) ** 2)
    assert tile_plan(model, 50, 60, tile=None, overlap=16) == (None, 1)


def test_tile_plan_gives_2_byte_maps_wider_tiles() -> None:
    """bf16 maps take half the bytes: a 1000-pixel side fits in 2 tiles, not fp32's 3."""
    model = prepare(build_arch("msrresnet", tiny=True), precision="fp32")
    assert upscale.speed_tile(model) == upscale.SPEED_TILE
    model.precision = "bf16"
    wide = upscale.speed_tile(model)
    assert 1.35 * upscale.SPEED_TILE < wide <= 1.42 * upscale.SPEED_TILE and wide % 8 == 0
    tile, batch = tile_plan(model, 1000, 1000, tile=None, overlap=16)
    assert tile is not None and 500 < tile <= wide and batch == 1


def big_image(tmp_path: Path) -> Path:
    return write_pngs(tmp_path / "in", [(64, 64)], block=4) / "im0.png"


def test_progress_bar_by_tiles_for_a_many_tile_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["upscale", str(big_image(tmp_path)), "--model", "bicubic", "--scale", "2", "--tile", "16",
            "--tile-overlap", "2"]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    count = len(tiling._spans(64, 16, 2)) ** 2
    assert count > tiling.PROGRESS_TILES and f"tiles:   0%|          | 0/{count} " in err
    assert main([*args, "-o", str(tmp_path / "b"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_progress_bar_waits_for_a_few_tiles(tmp_path: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiling, "PROGRESS_DELAY_S", 10**6)  # a few tiles show a bar only after a long wait
    args = ["upscale", str(big_image(tmp_path)), "--model", "bicubic", "--scale", "2", "--tile", "40",
            "--tile-overlap", "2", "-o", str(tmp_path / "a")]
    assert main(args) == 0
    assert "tiles" not in capsys.readouterr().err


def test_png_level_changes_size_not_pixels(tmp_path: Path) -> None:
    image = big_image(tmp_path)
    sizes = {}
    for level in ("0", "9"):
        out = tmp_path / f"level{level}"
        assert main(["upscale", str(image), "-o", str(out), "--model", "bicubic", "--scale", "2", "--png-level",
                     level, "--quiet"]) == 0
        sizes[level] = (out / "im0.png").stat().st_size
    assert sizes["0"] > sizes["9"]
    assert torch.equal(read_image(tmp_path / "level0" / "im0.png").rgb, read_image(tmp_path / "level9" / "im0.png").rgb)
    with pytest.raises(SystemExit) as caught:
        main(["upscale", str(image), "-o", str(tmp_path / "x"), "--png-level", "10"])
    assert caught.value.code == 2


@pytest.mark.parametrize("tiny", [True, False])
@pytest.mark.parametrize("method", ["srgan", "esrgan"])
def test_bench_training_configs_are_valid_runs(method: str, tiny: bool, tmp_path: Path) -> None:
    """The bench's training configs parse (a config change in the engine must not first show in a long bench)."""
    from perceptsr.engine.setup import parse_train_config
    from perceptsr.inference.bench_training import run_config

    config = parse_train_config(run_config(method, [str(tmp_path)], steps=3, precision="bf16", channels_last=True,
                                           tiny=tiny))
    assert config.method == method and config.channels_last and config.precision == "bf16"
    assert config.model.allow_random_vgg
