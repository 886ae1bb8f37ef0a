"""The report viewer (index.html) in a real headless Chromium: shared zoom/pan, wipe, keyboard switching.

Needs Debian's `chromium` (.ci/run installs it); elsewhere the tests skip when no browser is found, and fail
under CI=true, so CI can never pass by skipping. Screenshots land in the test's tmp folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from chromium_cdp import Chromium, find_chromium
from PIL import Image

from perceptsr.archs import ARCHS
from perceptsr.evaluation.protocol import Protocol
from perceptsr.evaluation.report import parse_model_spec, run_report
from perceptsr.inference.upscale import RunOptions
from perceptsr.zoo.release import save_release

LOADED = ("window.perceptsrViewer && Array.from(document.images).filter(i => i.offsetParent)"
          ".every(i => i.complete && i.naturalWidth > 0)")
GRID_IMAGES = "Array.from(document.querySelectorAll('#grid .viewport img'))"


def write_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(104, 200), (200, 104)]):
        base = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        Image.fromarray(base).resize((w, h), Image.BICUBIC).save(folder / f"im{i}.png")
    return folder


def bicubic_like_release(path: Path) -> Path:
    """A tiny MSRResNet with near-zero weights: its output is about the bilinear upsampling it adds."""
    torch.manual_seed(0)
    spec = ARCHS["msrresnet"]
    model = spec.module(spec.tiny(4))
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(0.05)
    save_release(path, arch="msrresnet", config=model.config, state_dict=model.state_dict())
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("viewer")
    data = write_dataset(root / "tiny_set")
    model = bicubic_like_release(root / "smooth.safetensors")
    out = root / "report"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread beats two on a loaded 2-core machine
    run_report(models=[parse_model_spec("bicubic"), parse_model_spec(str(model))], data=[data], protocol=Protocol(4),
               out=out, run=RunOptions(device="cpu"), lpips_note="not needed here", progress=False)
    torch.set_num_threads(threads)
    return out / "index.html"


@pytest.fixture(scope="module")
def crowded_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six panels with long labels: captions wrap to several lines in the grid's narrow columns."""
    root = tmp_path_factory.mktemp("crowded")
    data = write_dataset(root / "tiny_set")
    model = bicubic_like_release(root / "smooth.safetensors")
    labels = [f"MATLAB bicubic baseline - variant {i} of the same model" for i in (1, 2)]
    labels += [f"a tiny nearly-bilinear release file - copy number {i}" for i in (1, 2, 3)]
    specs = [parse_model_spec(f"{'bicubic' if i < 2 else model}:label={label}") for i, label in enumerate(labels)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run_report(models=specs, data=[data], protocol=Protocol(4), out=root / "report", run=RunOptions(device="cpu"),
               lpips_note="weights not available offline in this test, so the column is left out", progress=False)
    torch.set_num_threads(threads)
    return root / "report" / "index.html"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    executable = find_chromium()
    if executable is None:
        message = "no Chromium found (apt-get install chromium, or set PERCEPTSR_CHROMIUM)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    with Chromium(executable, tmp_path_factory.mktemp("profile")) as chromium:
        yield chromium


@pytest.fixture
def page(browser: Chromium, report: Path) -> Chromium:
    browser.open(report.as_uri())
    browser.wait_for(LOADED)
    return browser


def state(page: Chromium) -> dict:
    return json.loads(page.evaluate("JSON.stringify(perceptsrViewer.state)"))


def rect(page: Chromium, selector: str) -> dict:
    return json.loads(page.evaluate(f"JSON.stringify(document.querySelector({selector!r}).getBoundingClientRect())"))


def grid_transforms(page: Chromium) -> list[str]:
    return page.evaluate(f"{GRID_IMAGES}.map(i => i.style.transform)")


def test_page_is_self_contained_and_labelled(page: Chromium, report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html  # no CDN, nothing fetched
    sources = page.evaluate(f"{GRID_IMAGES}.map(i => i.getAttribute('src'))")
    assert sources[0] == "report_files/hr/tiny_set/im0.png"
    assert all(not s.startswith(("/", "file:")) for s in sources) and len(sources) == 3
    captions = page.evaluate("Array.from(document.querySelectorAll('#grid figcaption')).map(c => c.textContent)")
    assert captions[0].startswith("[1] HR") and "NIQE" in captions[0]
    assert captions[1].startswith("[2] bicubic") and "PSNR-Y" in captions[1] and "LR-PSNR" in captions[1]
    assert captions[2].startswith("[3] smooth")
    doc = json.loads((report.parent / "results.json").read_text())
    psnr = doc["results"]["tiny_set"][doc["models"][0]["id"]]["images"]["im0"]["psnr"]
    assert f"{psnr:.2f}" in captions[1]


def test_wheel_zoom_and_drag_pan_are_shared_by_every_panel(page: Chromium, tmp_path: Path) -> None:
    before = state(page)
    initial = grid_transforms(page)
    assert len(set(initial)) == 1
    box = rect(page, "#grid .panel:nth-child(2) .viewport")
    for _ in range(3):
        page.wheel(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4, -240)
    zoomed = state(page)
    assert zoomed["zoom"] > 2 * before["zoom"]
    transforms = grid_transforms(page)
    assert len(set(transforms)) == 1 and transforms[0] != initial[0]
    sizes = page.evaluate(f"{GRID_IMAGES}.map(i => [i.parentElement.clientWidth, i.parentElement.clientHeight])")
    assert len({tuple(s) for s in sizes}) == 1  # same viewport size + same transform = same pixels
    assert page.evaluate(f"getComputedStyle({GRID_IMAGES}[0]).imageRendering") == "pixelated"

    other = rect(page, "#grid .panel:nth-child(3) .viewport")
    start = (other["x"] + other["width"] / 2, other["y"] + other["height"] / 2)
    page.drag(start, (start[0] - 60, start[1] - 30))
    panned = state(page)
    assert panned["zoom"] == pytest.approx(zoomed["zoom"])
    assert panned["cx"] - zoomed["cx"] == pytest.approx(60 / zoomed["zoom"], rel=0.05)
    assert panned["cy"] - zoomed["cy"] == pytest.approx(30 / zoomed["zoom"], rel=0.05)
    after = grid_transforms(page)
    assert len(set(after)) == 1 and after[0] != transforms[0]
    shot = page.screenshot(tmp_path / "viewer_zoomed.png")
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (800, 1280) and pixels.std() > 5


def test_keys_switch_images_and_models_at_a_fixed_zoom(page: Chromium) -> None:
    page.key("+")
    page.key("+")
    zoomed = state(page)
    page.key("ArrowRight")
    moved = state(page)
    assert moved["image"] == 1 and moved["zoom"] == pytest.approx(zoomed["zoom"])
    page.wait_for(LOADED)
    sources = page.evaluate(f"{GRID_IMAGES}.map(i => i.getAttribute('src'))")
    assert all(s.endswith("/tiny_set/im1.png") for s in sources)
    assert page.evaluate("document.querySelector('#image-count').textContent") == "2 / 2"
    page.key("ArrowRight")
    assert state(page)["image"] == 0  # wraps around

    page.key("s")
    page.key("3")
    single = state(page)
    assert single["view"] == "single" and single["panel"] == 2
    assert page.evaluate("document.querySelector('#single img').getAttribute('src')").startswith("report_files/sr/")
    page.key("ArrowUp")
    page.key("ArrowUp")
    single_src = page.evaluate("document.querySelector('#single img').getAttribute('src')")
    assert single_src == "report_files/hr/tiny_set/im0.png"
    assert state(page)["zoom"] == pytest.approx(zoomed["zoom"])
    assert page.evaluate("document.querySelector('#single figcaption').textContent").startswith("[1] HR")


def test_wipe_slider_moves_the_split_between_two_models(page: Chromium, tmp_path: Path) -> None:
    page.key("w")
    page.wait_for(LOADED)
    wipe = state(page)
    assert wipe["view"] == "wipe" and wipe["wipeA"] != wipe["wipeB"]
    top = page.evaluate("document.querySelector('#wipe .layer-a img').getAttribute('src')")
    bottom = page.evaluate("document.querySelector('#wipe .layer-b img').getAttribute('src')")
    assert top != bottom and bottom == "report_files/hr/tiny_set/im0.png"
    slider = rect(page, "#wipe-slider")
    y = slider["y"] + slider["height"] / 2
    page.drag((slider["x"] + slider["width"] / 2, y), (slider["x"] + slider["width"] * 0.2, y), steps=4)
    moved = state(page)["wipe"]
    assert 0.1 < moved < 0.32
    clip = page.evaluate("document.querySelector('#wipe .layer-a').style.clipPath")
    assert clip.startswith("inset(0px") or clip.startswith("inset(0 ")
    right = float(clip.split()[1].rstrip("%"))
    assert right == pytest.approx((1 - moved) * 100, abs=0.01)
    line = rect(page, "#wipe .wipe-line")
    view = rect(page, "#wipe .viewport")
    assert line["x"] + 1 == pytest.approx(view["x"] + moved * view["width"], abs=1.5)
    page.key("]")
    assert state(page)["wipe"] == pytest.approx(moved + 0.05)
    transforms = page.evaluate("Array.from(document.querySelectorAll('#wipe img')).map(i => i.style.transform)")
    assert len(transforms) == 2 and len(set(transforms)) == 1
    page.screenshot(tmp_path / "viewer_wipe.png")
    assert (tmp_path / "viewer_wipe.png").stat().st_size > 2000


@pytest.mark.parametrize(("width", "height"), [(1400, 900), (1920, 1080)])
def test_captions_lie_inside_the_window_in_every_view(browser: Chromium, crowded_report: Path, tmp_path: Path,
                                                      width: int, height: int) -> None:
    browser.send("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        browser.open(crowded_report.as_uri())
        browser.wait_for(LOADED)
        for view in ("grid", "single", "wipe"):
            browser.evaluate(f"perceptsrViewer.setView({view!r})")
            browser.wait_for(LOADED)
            boxes = json.loads(browser.evaluate(
                f"JSON.stringify(Array.from(document.querySelectorAll('#{view} figcaption'))"
                ".map(c => c.getBoundingClientRect()))"))
            footer = rect(browser, "#help")
            assert boxes, view
            for box in boxes:  # whole caption in the window and above the footer
                assert box["height"] > 10 and box["top"] >= 0 and box["left"] >= 0, (view, box)
                assert box["bottom"] <= min(height, footer["top"]) + 0.5 and box["right"] <= width + 0.5, (view, box)
            overflow = browser.evaluate("[document.documentElement.scrollHeight, document.documentElement.scrollWidth]")
            assert overflow[0] <= height and overflow[1] <= width, (view, overflow)  # no page scrollbar
            full = browser.evaluate(f"Array.from(document.querySelectorAll('#{view} figcaption'))"
                                    ".every(c => c.scrollHeight <= c.clientHeight + 1)")
            assert full, view  # nothing clipped inside the caption either
            browser.screenshot(tmp_path / f"{view}_{width}x{height}.png")
    finally:
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})


def test_scores_view_has_a_mean_table_per_dataset(page: Chromium, report: Path) -> None:
    page.key("t")
    assert state(page)["view"] == "scores"
    doc = json.loads((report.parent / "results.json").read_text())
    tables = json.loads(page.evaluate(
        "JSON.stringify(Array.from(document.querySelectorAll('table.means')).map(t => ({dataset: t.dataset.dataset, "
        "head: Array.from(t.tHead.rows[0].cells).map(c => c.textContent), "
        "rows: Array.from(t.tBodies[0].rows).map(r => Array.from(r.cells).map(c => c.innerHTML))})))"))
    assert [t["dataset"] for t in tables] == [d["name"] for d in doc["datasets"]]
    table = tables[0]
    assert table["head"][0] == "model" and table["head"][1].startswith("PSNR-Y")
    assert [row[0] for row in table["rows"]] == ["[2] bicubic", "[3] smooth"]
    psnr = [doc["results"]["tiny_set"][m["id"]]["mean"]["psnr"] for m in doc["models"]]
    best = max(range(2), key=lambda i: psnr[i])
    assert table["rows"][best][1] == f"<b>{psnr[best]:.2f}</b>" and "<b>" not in table["rows"][1 - best][1]
    protocol = page.evaluate("document.querySelector('#protocol').textContent")
    assert protocol.startswith("Protocol: ") and "crop 4" in protocol
    # the conventions are behind a toggle, and no longer repeated in the footer
    assert page.evaluate("document.querySelector('#conventions').open") is False
    assert "LR-PSNR" in page.evaluate("document.querySelector('#conventions ul').textContent")
    footer = page.evaluate("document.querySelector('#help').textContent")
    assert "Protocol" not in footer and "LR-PSNR" not in footer and "crop" not in footer
    row = rect(page, "table.means tbody tr:nth-child(2)")
    page.click(row["x"] + 5, row["y"] + 5)
    assert state(page)["view"] == "single" and state(page)["panel"] == 2
