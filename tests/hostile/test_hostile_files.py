"""Hostile weight and array files, made by the tests: every one is refused in one line before memory is committed.

Sizes claimed by a file (an `.npy` header, a zip member, a release's architecture config) are checked against the
bytes present and a cap; pickles never run and their refusal never passes on torch's advice to disable the guard;
NaN, infinite, bool and integer weights are refused.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from perceptsr.archs import ARCHS
from perceptsr.conditions.seg import read_probabilities
from perceptsr.convert import convert_file, convert_state, read_checkpoint
from perceptsr.errors import CheckpointError, InputError, PerceptsrError
from perceptsr.io import arrays
from perceptsr.zoo.release import FORMAT, VERSION, load_release, read_release, save_release
from perceptsr.zoo.weights import read_tensor_file

ADVICE = ("weights_only=False", "weights_only` set to `False", "add_safe_globals", "safe_globals")


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text and text.strip(), text
    assert not any(advice in text for advice in ADVICE), text
    return text


def npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    """A version 1.0 `.npy` header claiming `shape`, with no data after it."""
    text = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape!r}, }}"
    text += " " * (-(10 + len(text) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def tiny_release(tmp_path: Path, arch: str = "msrresnet", **changes: object) -> tuple[Path, dict]:
    spec = ARCHS[arch]
    config = spec.tiny(4)
    state = spec.module(config).state_dict()
    path = tmp_path / f"{arch}.safetensors"
    save_release(path, arch=arch, config=config, state_dict=state, overwrite=True)
    return path, state


def forged_release(path: Path, state: dict, config: dict, arch: str = "msrresnet") -> Path:
    metadata = {"format": FORMAT, "version": VERSION, "arch": arch, "config": json.dumps(config),
                "scale": str(config.get("scale", 4))}
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return path


# --- release files: the config must agree with the tensors before anything is built ----------------------------

@pytest.mark.parametrize("setting", [{"num_block": 1e9}, {"num_block": 10**9}, {"num_feat": 200000},
                                     {"num_feat": 2**62}, {"num_block": -1}, {"num_feat": 16}, {"scale": 3},
                                     {"num_block": 3}])
def test_a_release_config_that_disagrees_with_its_tensors_is_refused(tmp_path: Path, setting: dict) -> None:
    _, state = tiny_release(tmp_path)
    config = {"scale": 4, "num_feat": 8, "num_block": 2, **setting}
    path = forged_release(tmp_path / "forged.safetensors", state, config)
    with pytest.raises(CheckpointError) as error:
        load_release(path)
    one_line(error)


@pytest.mark.parametrize("damage", ["nan", "inf", "bool", "int64", "float16-ok", "missing", "extra", "shape"])
def test_release_weights_are_floating_finite_and_complete(tmp_path: Path, damage: str) -> None:
    _, state = tiny_release(tmp_path)
    key = "conv_first.weight"
    if damage == "nan":
        state[key] = state[key].clone().index_fill_(0, torch.tensor([0]), float("nan"))
    elif damage == "inf":
        state[key] = state[key].clone().fill_(float("inf"))
    elif damage == "bool":
        state[key] = state[key] > 0
    elif damage == "int64":
        state[key] = state[key].long()
    elif damage == "float16-ok":
        state[key] = state[key].half()
    elif damage == "missing":
        del state[key]
    elif damage == "extra":
        state["payload"] = torch.zeros(3)
    else:
        state[key] = torch.zeros(8, 3, 5, 5)
    path = forged_release(tmp_path / "forged.safetensors", state, {"scale": 4, "num_feat": 8, "num_block": 2})
    if damage == "float16-ok":
        assert load_release(path).conv_first.weight.dtype == torch.float32
        return
    with pytest.raises(CheckpointError) as error:
        read_release(path)
    one_line(error)


@pytest.mark.parametrize("metadata", [{}, {"format": FORMAT}, {"format": FORMAT, "arch": "msrresnet"},
                                      {"format": FORMAT, "arch": "msrresnet", "config": "[1, 2"},
                                      {"format": FORMAT, "arch": "msrresnet", "config": "[1, 2]"},
                                      {"format": FORMAT, "arch": "msrresnet", "config": "{\"num_feat\": \"x\"}"},
                                      {"format": FORMAT, "arch": "../../etc", "config": "{}"}])
def test_release_metadata_damage_is_one_line(tmp_path: Path, metadata: dict) -> None:
    _, state = tiny_release(tmp_path)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path), metadata=metadata)
    with pytest.raises(CheckpointError) as error:
        read_release(path)
    one_line(error)


# --- array headers and zip members are checked against the bytes present and a cap ------------------------------

def test_a_310_byte_npz_claiming_8_tib_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", npy_header((1 << 40,)))
    assert path.stat().st_size < 400
    for reader in (read_tensor_file, read_checkpoint):
        with pytest.raises(CheckpointError, match="claims 8.0 TiB") as error:
            reader(path)
        one_line(error)


def test_a_short_npy_is_refused_as_truncated(tmp_path: Path) -> None:
    path = tmp_path / "short.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", npy_header((4, 4)) + b"\0" * 40)
    with pytest.raises(CheckpointError, match="truncated") as error:
        read_tensor_file(path)
    one_line(error)


def test_a_compressed_npz_that_inflates_far_beyond_its_size_is_refused_before_inflating(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arrays, "MIN_INFLATE", 1 << 20)  # the real floor is 64 MiB; the ratio rule is the same
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, w=np.zeros(4 << 20, np.float32))  # 16 MiB of zeros in a few KiB
    inflated = [0]
    original = zipfile.ZipExtFile.read

    def counting(self: zipfile.ZipExtFile, n: int = -1) -> bytes:
        data = original(self, n)
        inflated[0] += len(data)
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting)
    for reader in (read_tensor_file, read_checkpoint):
        with pytest.raises(CheckpointError, match="zip bomb") as error:
            reader(path)
        one_line(error)
    assert inflated[0] < 1 << 16


def test_a_seg_npy_claiming_298_gib_is_one_input_error(tmp_path: Path) -> None:
    path = tmp_path / "map.npy"
    path.write_bytes(npy_header((8, 100000, 100000), "<f4"))
    with pytest.raises(InputError, match="claims") as error:
        read_probabilities(path)
    one_line(error)


@pytest.mark.parametrize("values", ["nan", "negative", "above-one"])
def test_seg_probabilities_must_be_finite_and_in_zero_one(tmp_path: Path, values: str) -> None:
    data = np.full((8, 4, 4), 0.125, np.float32)
    data[0, 0, 0] = {"nan": np.nan, "negative": -0.5, "above-one": 7.0}[values]
    np.save(tmp_path / "map.npy", data)
    with pytest.raises(InputError) as error:
        read_probabilities(tmp_path / "map.npy")
    one_line(error)


# --- pickles: never run, refused in the project's words ----------------------------------------------------------

class Payload:
    """Pickles as a call of os.system (what a hostile .pth does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("route", ["convert", "weights", "seg", "legacy"])
def test_a_pickle_calling_os_system_is_refused_without_advice(tmp_path: Path, route: str) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / ("evil.pth" if route != "seg" else "evil_bic.pth")
    if route == "legacy":
        import pickle

        path.write_bytes(pickle.dumps({"w": Payload(marker)}, protocol=2))
    else:
        torch.save({"w": Payload(marker)}, path)
    reader = {"convert": read_checkpoint, "weights": read_tensor_file, "seg": read_probabilities,
              "legacy": read_checkpoint}[route]
    with pytest.raises(PerceptsrError) as error:
        reader(path)
    assert "system" in one_line(error)
    assert not marker.exists()


# --- convert: NaN, infinite, bool and integer weights never reach a release --------------------------------------

@pytest.mark.parametrize("damage", ["nan", "inf", "bool", "int"])
def test_convert_refuses_non_finite_and_non_float_weights(tmp_path: Path, damage: str) -> None:
    state = ARCHS["msrresnet"].module(ARCHS["msrresnet"].tiny(4)).state_dict()
    key = "conv_last.weight"
    state[key] = {"nan": state[key].clone().fill_(float("nan")), "inf": state[key].clone().fill_(float("inf")),
                  "bool": state[key] > 0, "int": state[key].long()}[damage]
    with pytest.raises(CheckpointError) as error:
        convert_state(state)
    one_line(error)
    torch.save(state, tmp_path / "net.pth")
    with pytest.raises(CheckpointError):
        convert_file(tmp_path / "net.pth", tmp_path / "out.safetensors")
    assert not list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob(".*"))


def test_convert_infers_no_absurd_width_from_an_empty_tensor(tmp_path: Path) -> None:
    state = ARCHS["msrresnet"].module(ARCHS["msrresnet"].tiny(4)).state_dict()
    state["conv_first.weight"] = torch.zeros(200000, 3, 3, 0)  # a width claim with no data behind it
    with pytest.raises(CheckpointError) as error:
        convert_state(state)
    one_line(error)


def test_npz_header_helper_reads_real_files(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(6, dtype=np.int16).reshape(2, 3))
    assert arrays.load_npy(tmp_path / "a.npy").tolist() == [[0, 1, 2], [3, 4, 5]]
    buffer = io.BytesIO()
    np.save(buffer, np.ones(3))
    assert arrays.npy_header(io.BytesIO(buffer.getvalue()), "x")[2] == 24
