"""Property-based fuzzing of every reader of user files: images, releases, checkpoints, weight/array files, configs.

Inputs are random bytes, truncations, bit flips and byte splices of small valid files made here. The property:
a reader returns a result or raises a PerceptsrError with a one-line message, never another exception type. Size
caps are kept small (a 64-kilopixel image limit), so a forged header can never make a case allocate much.
Each fuzz loop runs in a forked child whose address space may grow by 1 GiB only, so "never unbounded memory" is
checked too. Examples are derandomized (a fixed sequence), so a failure replays; `CASES` counts what ran.
"""

from __future__ import annotations

import io
import json
import os
import resource
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from perceptsr.archs import ARCHS
from perceptsr.conditions.seg import read_mapping, read_probabilities
from perceptsr.config import read_yaml
from perceptsr.convert import read_checkpoint
from perceptsr.engine.checkpoint import META, OPTIM, WEIGHTS, load_checkpoint, save_checkpoint
from perceptsr.engine.setup import load_train_config
from perceptsr.errors import PerceptsrError
from perceptsr.io.images import read_image
from perceptsr.zoo.release import load_release, save_release

FUZZ = settings(max_examples=60, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
CASES: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def report_counts() -> Iterator[None]:
    yield
    print(f"\nfuzz cases by reader: {dict(CASES)}; total {sum(CASES.values())}")  # noqa: T201 - the record


MEMORY_HEADROOM = 1 << 30  # what one reader may add to the address space; a header bomb would exceed it


def bounded(run: Callable[[], None]) -> None:
    """Run the fuzz loop `run` in a forked child whose address space may grow by at most MEMORY_HEADROOM.

    A reader that trusted a forged size would die there with MemoryError (not a PerceptsrError): the test fails.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            with open("/proc/self/statm") as handle:
                size = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            resource.setrlimit(resource.RLIMIT_AS, (size + MEMORY_HEADROOM, resource.RLIM_INFINITY))
            before = Counter(CASES)
            run()
            os.write(write_end, json.dumps(CASES - before).encode())
            code = 0
        except BaseException:  # noqa: BLE001 - reported through the exit code and stderr
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        counts = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "a fuzz case failed or broke the memory bound (see stderr)"
    CASES.update(json.loads(counts))


def damage(original: bytes) -> st.SearchStrategy[bytes]:
    """Truncations, bit flips (biased to the header), splices and plain random bytes of `original`."""
    size = len(original)
    position = st.one_of(st.integers(0, min(size, 512) - 1), st.integers(0, size - 1))

    def flip(spots: list[tuple[int, int]]) -> bytes:
        data = bytearray(original)
        for index, bit in spots:
            data[index] ^= 1 << bit
        return bytes(data)

    def splice(args: tuple[int, bytes]) -> bytes:
        index, chunk = args
        return original[:index] + chunk + original[index + len(chunk):]

    return st.one_of(
        st.integers(0, size - 1).map(lambda n: original[:n]),
        st.lists(st.tuples(position, st.integers(0, 7)), min_size=1, max_size=6).map(flip),
        st.tuples(position, st.binary(min_size=1, max_size=16)).map(splice),
        st.binary(max_size=600),
    )


def holds(reader: Callable[[], object], kind: str) -> None:
    """The fuzz property: a result, or one PerceptsrError line."""
    CASES[kind] += 1
    try:
        reader()
    except PerceptsrError as error:
        text = str(error)
        assert text and "\n" not in text, f"{kind}: multi-line message {text!r}"
        assert "weights_only=False" not in text and "`weights_only` set to `False`" not in text


# --- images ----------------------------------------------------------------------------------------------------

def image_bytes(fmt: str) -> bytes:
    pixels = (np.arange(12 * 10 * 3).reshape(12, 10, 3) * 7 % 256).astype(np.uint8)
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if fmt == "TIFF-F":
        Image.fromarray(pixels[..., 0].astype(np.float32) / 255, mode="F").save(buffer, format="TIFF")
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()


IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp", "WEBP": ".webp", "TIFF-F": ".tif"}


@pytest.mark.parametrize("fmt", list(IMAGE_FORMATS))
def test_fuzz_image_reader(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"fuzz{IMAGE_FORMATS[fmt]}"

    @FUZZ
    @given(damage(image_bytes(fmt)))
    def run(data: bytes) -> None:
        path.write_bytes(data)
        holds(lambda: read_image(path, max_pixels=1 << 16), f"image-{fmt}")

    bounded(run)


# --- release files, checkpoints, weight and array files ---------------------------------------------------------

def release_bytes(tmp_path: Path) -> bytes:
    spec = ARCHS["msrresnet"]
    config = spec.tiny(4)
    path = tmp_path / "seed.safetensors"
    save_release(path, arch="msrresnet", config=config, state_dict=spec.module(config).state_dict())
    return path.read_bytes()


def test_fuzz_release_reader(tmp_path: Path) -> None:
    path = tmp_path / "fuzz.safetensors"

    @FUZZ
    @given(damage(release_bytes(tmp_path)))
    def run(data: bytes) -> None:
        path.write_bytes(data)
        holds(lambda: load_release(path), "release")

    bounded(run)


@pytest.mark.parametrize("part", [WEIGHTS, OPTIM, META])
def test_fuzz_checkpoint_reader(tmp_path: Path, part: str) -> None:
    weights = {"generator.w": torch.rand(4, 3), "method.count": torch.tensor(3)}
    state = {"torch_rng": torch.get_rng_state(), "optimizers": {"generator": {"state": {}, "param_groups": []}}}
    folder = save_checkpoint(tmp_path / "run", 5, weights, state, {"phase": "p", "best": None})
    original = (folder / part).read_bytes()

    @FUZZ
    @given(damage(original))
    def run(data: bytes) -> None:
        (folder / part).write_bytes(data)
        holds(lambda: load_checkpoint(folder), f"checkpoint-{part}")

    bounded(run)


def weight_files() -> dict[str, bytes]:
    state = {"a.weight": torch.rand(3, 2), "b": torch.arange(4.0)}
    pth, npz, npy = io.BytesIO(), io.BytesIO(), io.BytesIO()
    torch.save(state, pth)
    np.savez(npz, **{k: v.numpy() for k, v in state.items()})
    np.save(npy, np.full((8, 3, 2), 0.125, np.float32))
    return {".pth": pth.getvalue(), ".npz": npz.getvalue(), ".npy": npy.getvalue()}


@pytest.mark.parametrize("suffix", [".pth", ".npz", ".npy"])
def test_fuzz_weight_and_array_readers(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"fuzz{suffix}"
    reader = read_probabilities if suffix == ".npy" else read_checkpoint

    @FUZZ
    @given(damage(weight_files()[suffix]))
    def run(data: bytes) -> None:
        path.write_bytes(data)
        holds(lambda: reader(path), f"weights{suffix}")

    bounded(run)


# --- configs -------------------------------------------------------------------------------------------------------

def test_fuzz_class_mapping_reader(tmp_path: Path) -> None:
    from importlib import resources

    path = tmp_path / "fuzz.yaml"
    original = (resources.files("perceptsr") / "assets" / "ade20k_to_ost.yaml").read_bytes()[-700:]
    original = b"first_index: 1\ndefault: background\nclasses:\n" + original.split(b"\n", 1)[1]

    @FUZZ
    @given(damage(original))
    def run(data: bytes) -> None:
        path.write_bytes(data)
        holds(lambda: read_mapping(str(path)), "class-mapping")

    bounded(run)


CONFIG = {
    "method": "srgan",
    "model": {"arch": "msrresnet", "generator": {"scale": 4, "num_feat": 8, "num_block": 1},
              "phases": {"pretrain": {"iterations": 2}, "gan": {"iterations": 2}}},
    "data": {"train": ["hr"], "patch_size": 32, "batch_size": 4, "workers": 0},
    "save_every": 2, "log_every": 1, "seed": 3,
}


def test_fuzz_config_reader(tmp_path: Path) -> None:
    path = tmp_path / "fuzz.yaml"
    original = yaml.safe_dump(CONFIG).encode()

    @FUZZ
    @given(damage(original))
    def run(data: bytes) -> None:
        path.write_bytes(data)
        holds(lambda: read_yaml(path), "config-yaml")
        holds(lambda: load_train_config(path), "config-train")

    bounded(run)


def test_fuzz_config_values(tmp_path: Path) -> None:
    """Well-formed YAML with hostile values in every top-level and generator field."""
    path = tmp_path / "values.yaml"
    values = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                       st.text(max_size=8), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                                                 st.integers(),
                                                                                                 max_size=2))
    keys = st.sampled_from(["seed", "save_every", "log_every", "val_every", "keep_checkpoints", "precision",
                            "device", "model.generator.num_feat", "model.generator.num_block", "model.generator.scale",
                            "data.patch_size", "data.batch_size", "data.workers",
                            "model.phases.pretrain.iterations"])

    @FUZZ
    @given(st.lists(st.tuples(keys, values), min_size=1, max_size=3))
    def run(changes: list) -> None:
        config = json.loads(json.dumps(CONFIG))
        for key, value in changes:
            *parents, last = key.split(".")
            target = config
            for parent in parents:
                target = target[parent]
            target[last] = value
        path.write_text(yaml.safe_dump(config))
        holds(lambda: load_train_config(path), "config-values")

    bounded(run)
