"""The Python API (issue 21): the README's Python block runs as written, each function returns the kind of image
it was given, `save` writes every mode the CLI writes, and errors are worded for Python callers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tolerance import assert_paths_close

import perceptsr
from perceptsr.io.images import read_image

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_blocks() -> list[str]:
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)
    assert blocks, "README.md has no ```python block"
    return blocks


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    for block in readme_python_blocks():
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})  # noqa: S102
    assert Image.open(tmp_path / "photo_x4.png").size == (80, 64)
    assert Image.open(tmp_path / "photo_natsr.png").size == (80, 64)
    printed = capsys.readouterr().out
    assert printed.strip() == "model srresnet-x4 upscales x4, but scale=3 was asked for"


def test_namespace_is_explicit() -> None:
    assert set(perceptsr.__all__) >= {"upscale", "save", "load_model", "degrade", "InputError"}
    assert all(hasattr(perceptsr, name) for name in perceptsr.__all__)
    for leaked in ("Path", "torch", "nn", "Tensor", "annotations"):
        assert not hasattr(perceptsr, leaked), leaked


def test_loaded_models_are_for_inference() -> None:
    for name in ("bicubic", "srresnet-x4"):
        model = perceptsr.load_model(name)
        assert not model.training
        assert not any(p.requires_grad for p in model.parameters())
        assert not model(torch.rand(1, 3, 8, 8)).requires_grad


@pytest.mark.parametrize(("shape", "dtype"), [((12, 10), np.uint8), ((12, 10, 1), np.uint8), ((12, 10, 2), np.uint8),
                                              ((12, 10, 3), np.uint16), ((12, 10, 4), np.uint8),
                                              ((12, 10, 3), np.float32), ((12, 10, 3), np.float64)])
def test_numpy_keeps_dtype_and_layout(shape: tuple[int, ...], dtype: type) -> None:
    rng = np.random.default_rng(1)
    array = rng.random(shape)
    array = array.astype(dtype) if np.issubdtype(dtype, np.floating) else \
        (array * np.iinfo(dtype).max).astype(dtype)
    out = perceptsr.upscale(array, "bicubic")
    assert out.dtype == dtype and out.shape == (48, 40, *shape[2:])


def test_tensor_path_and_pil_kinds(tmp_path: Path) -> None:
    model = perceptsr.load_model("bicubic", scale=2)
    batch = torch.rand(2, 3, 6, 7, dtype=torch.float64)
    out = perceptsr.upscale(batch, model)
    assert out.shape == (2, 3, 12, 14) and out.dtype == torch.float64 and not out.is_inference()
    reference = model(batch[1:].float()).clamp(0, 1).double()
    assert_paths_close(out[1:], reference, depth=12, what="fast path vs eager bicubic")  # summation order only
    assert perceptsr.upscale(batch[0], model).shape == (3, 12, 14)
    Image.fromarray(np.zeros((6, 7, 4), np.uint8)).save(tmp_path / "a.png")
    from_path = perceptsr.upscale(tmp_path / "a.png", model)
    assert isinstance(from_path, Image.Image) and from_path.mode == "RGBA" and from_path.size == (14, 12)
    gray16 = Image.fromarray(np.full((6, 7), 40000, np.uint16))
    assert perceptsr.upscale(gray16, model).mode == "I;16"
    assert perceptsr.degrade(np.zeros((9, 9, 3), np.uint8), 2).shape == (4, 4, 3)


def test_save_writes_every_mode(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    cases = {
        "rgb8.png": (rng.integers(0, 256, (5, 6, 3), dtype=np.uint8), False, 8, False),
        "rgb16.png": (rng.integers(0, 65536, (5, 6, 3), dtype=np.uint16), False, 16, False),
        "gray16.png": (rng.integers(0, 65536, (5, 6), dtype=np.uint16), True, 16, False),
        "rgba.png": (rng.integers(0, 256, (5, 6, 4), dtype=np.uint8), False, 8, True),
        "graya.png": (rng.integers(0, 256, (5, 6, 2), dtype=np.uint8), True, 8, True),
        "pil_gray.png": (Image.fromarray(rng.integers(0, 256, (5, 6), dtype=np.uint8)), True, 8, False),
        "tensor.png": (torch.rand(1, 3, 5, 6), False, 8, False),
    }
    for name, (image, gray, bits, alpha) in cases.items():
        assert perceptsr.save(image, tmp_path / name) == tmp_path / name
        back = read_image(tmp_path / name)
        assert (back.grayscale, back.bit_depth, back.alpha is not None) == (gray, bits, alpha), name
        assert back.rgb.shape[-2:] == (5, 6)
    exact = cases["rgb16.png"][0]
    back = read_image(tmp_path / "rgb16.png").rgb[0].permute(1, 2, 0).numpy()
    assert np.array_equal(np.round(back * 65535).astype(np.uint16), exact)
    with pytest.raises(perceptsr.InputError, match=r"overwrite=True"):
        perceptsr.save(cases["rgb8.png"][0], tmp_path / "rgb8.png")
    perceptsr.save(cases["rgb8.png"][0], tmp_path / "rgb8.png", overwrite=True)


@pytest.mark.parametrize(("call", "wording"), [
    (lambda: perceptsr.load_model("srresnet-x4", scale=3), "but scale=3 was asked for"),
    (lambda: perceptsr.upscale(np.zeros((8, 8, 3), np.uint8), "bicubic", tile=10), "bigger tile or a smaller"),
    (lambda: perceptsr.upscale(np.zeros((8, 8, 3), np.uint8), "bicubic", t=0.3), "t= applies only to FxSR"),
    (lambda: perceptsr.upscale(np.zeros((8, 8, 3), np.uint8), "bicubic", colour=1), "unknown condition colour="),
    (lambda: perceptsr.upscale(np.zeros((2, 8, 8, 3), np.uint8)), "H x W or H x W x C"),
    (lambda: perceptsr.upscale([[0]]), "not list"),
    (lambda: perceptsr.save("x.png", "y.png"), "needs an image"),
])
def test_errors_are_worded_for_python(call, wording: str) -> None:
    with pytest.raises(perceptsr.PerceptsrError) as error:
        call()
    message = str(error.value)
    assert wording in message and "\n" not in message and "--" not in message


def test_upscale_runs_without_autograd_records() -> None:
    model = perceptsr.load_model("srresnet-x4").requires_grad_(True)  # even a model a caller made trainable
    out = perceptsr.upscale(torch.rand(1, 3, 8, 8), model, device="cpu", precision="fp32")
    assert out.grad_fn is None and not out.requires_grad


def test_weight_mismatch_names_at_most_five_keys() -> None:
    from torch import nn

    from perceptsr.errors import describe_mismatch

    model = nn.Sequential(*[nn.Conv2d(3, 3, 1) for _ in range(8)])
    state = {f"{k}.x": v for k, v in model.state_dict().items()}
    state["0.weight"] = torch.zeros(4, 3, 1, 1)
    assert describe_mismatch(model, state) == (  # five keys named, the rest counted
        "missing 15 keys (0.bias, 1.weight, 1.bias and 12 more); unexpected 16 keys (0.weight.x and 15 more); "
        "1 key of another shape (0.weight: [3, 3, 1, 1] here, [4, 3, 1, 1] in the file)")


def test_missing_init_run_names_the_config_key(tmp_path: Path) -> None:
    from perceptsr.engine.train import init_source
    from perceptsr.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^init: run .*srresnet_x4 does not exist"):
        init_source(str(tmp_path / "runs" / "srresnet_x4"))
    with pytest.raises(ConfigError, match=r"^init: release file .*x\.safetensors does not exist"):
        init_source(str(tmp_path / "x.safetensors"))


def test_conditions_reach_a_conditional_model() -> None:
    from perceptsr.archs import ARCHS

    spec = ARCHS["fxsr"]
    model = spec.module(spec.tiny(4)).eval()
    lr = np.random.default_rng(3).random((8, 10, 3)).astype(np.float32)
    low, high = perceptsr.upscale(lr, model, t=0.0), perceptsr.upscale(lr, model, t=1.0)
    assert low.shape == (32, 40, 3) and not np.array_equal(low, high)
    as_map = perceptsr.upscale(lr, model, t=torch.ones(1, 1, 8, 10))  # a ready tensor goes to the model as it is
    np.testing.assert_allclose(as_map, high, atol=1e-5)
    with pytest.raises(perceptsr.InputError, match=r"^seg= applies only to SFTGAN models; this model takes t$"):
        perceptsr.upscale(lr, model, seg="auto")


def test_oversized_files_are_refused_in_python_words(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(perceptsr.InputError, match=r"raise it with max_pixels\)$"):
        perceptsr.upscale(tmp_path / "big.png", "bicubic", max_pixels=100)
    assert perceptsr.upscale(tmp_path / "big.png", "bicubic", max_pixels=400).size == (80, 80)
