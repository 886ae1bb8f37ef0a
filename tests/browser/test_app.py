"""`perceptsr app` served on a free port and used in a real headless Chromium.

What the browser drives, all through the page's own controls: the image is put into the upload box's file input
(DOM.setFileInputFiles, what choosing a file does), the global t is typed into the slider's number box, the t map
is painted with mouse drags on the ImageEditor's canvas (default brush: t = 1), and the Upscale button is clicked;
results are fetched from the page's download link. Two users are two tabs of the same browser. Needs Debian's
`chromium` and the `app` extra (gradio); elsewhere the tests skip, and under CI=true they fail instead.
The module's first test saves a screenshot (docs/app.png when PERCEPTSR_WRITE_DOCS=1, for the README).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from chromium_cdp import Chromium, find_chromium
from PIL import Image

from perceptsr.archs.fxsr import FxSRNet, FxSRNetConfig
from perceptsr.zoo.release import save_release

ROOT = Path(__file__).resolve().parents[2]
MODEL_FILE = "tiny_fxsr.safetensors"
LR_WIDTH, LR_HEIGHT = 256, 128
BRUSH_RADIUS = 13  # the editor's default brush (size 25) reaches this far, in image pixels
PAINT_TO = LR_WIDTH // 2 - BRUSH_RADIUS  # stroke ends: the brush then reaches the middle
REACH = 24  # LR pixels, above the reach of t in the tiny model (a t change at one column moves results 8 columns away)
DONE = "document.querySelector('#status').innerText.includes(' s (')"


def need(thing: object, message: str) -> None:
    if thing is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def demo_fxsr(path: Path) -> Path:
    """A tiny FxSR whose output is the image (nearest x4) plus a texture that t changes: results look like
    pictures in the screenshot. The condition path has no biases, so t = 0 leaves the features unmodulated."""
    torch.manual_seed(0)
    model = FxSRNet(FxSRNetConfig(scale=4, num_feat=8, num_block=1, num_grow_ch=4, cond_feat=4))
    with torch.no_grad():
        for name in ("conv_first", "conv_up1", "conv_up2", "conv_hr", "conv_last"):
            conv = model.get_submodule(name)
            conv.weight.zero_()
            conv.bias.zero_()
            for channel in range(3):
                conv.weight[channel, channel, 1, 1] = 1.0
        model.conv_body.weight.mul_(0.5)
        for name, param in model.named_parameters():
            if "SFT" in name or "cond_net" in name:
                param.zero_() if name.endswith("bias") else param.normal_(0, 2.0)
        model.cond_net[0].weight.fill_(1.0)
    save_release(path, arch="fxsr", config=model.config, state_dict=model.state_dict())
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def fetch(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET; status 0 when nothing answers."""
    try:
        with LOCAL.open(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""
    except urllib.error.URLError:
        return 0, b""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("app")
    models = root / "models"
    models.mkdir()
    demo_fxsr(models / MODEL_FILE)
    sample = np.asarray(Image.open(ROOT / "samples" / "astronaut.png").convert("RGB"))
    image = root / "astronaut_wide.png"
    Image.fromarray(np.concatenate([sample, sample[:, ::-1]], axis=1)).save(image)
    big = root / "astronaut_big.png"  # 6 tiles of 256: long enough to queue behind
    Image.fromarray(np.tile(sample, (3, 6, 1))).save(big)
    corrupt = root / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a picture" * 20)
    return {"models": models, "image": image, "big": big, "corrupt": corrupt, "root": root}


@pytest.fixture(scope="module")
def server(files: dict[str, Path]) -> Iterator[str]:
    need(importlib.util.find_spec("gradio"), "gradio is not installed (pip install -e '.[app]')")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PERCEPTSR_SEG_MODEL": ""}
    log = (files["root"] / "server.log").open("w")
    command = [sys.executable, "-m", "perceptsr", "app", "--models-dir", str(files["models"]), "--port", str(port),
               "--device", "cpu"]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while fetch(url + "/")[0] != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the app did not start: {(files['root'] / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    executable = find_chromium()
    need(executable, "no Chromium found (apt-get install chromium, or set PERCEPTSR_CHROMIUM)")
    with Chromium(executable, tmp_path_factory.mktemp("profile"), width=1400, height=1100, timeout=60) as chromium:
        yield chromium


def open_page(browser: Chromium, url: str) -> None:
    browser.open(url + "/")
    browser.wait_for("document.querySelector('#upload input[type=file]') !== null", 30)


def upload(browser: Chromium, path: Path) -> None:
    root = browser.send("DOM.getDocument")["root"]["nodeId"]
    node = browser.send("DOM.querySelector", {"nodeId": root, "selector": "#upload input[type=file]"})["nodeId"]
    browser.send("DOM.setFileInputFiles", {"files": [str(path)], "nodeId": node})


def status(browser: Chromium) -> str:
    return browser.evaluate("document.querySelector('#status').innerText")


def run_and_download(browser: Chromium) -> np.ndarray:
    """Click Upscale, wait for the new result, and read the downloadable PNG."""
    before = browser.evaluate("(document.querySelector('#download a') || {}).href || ''")
    browser.evaluate("document.querySelector('#run').click()")
    href = browser.wait_for(f"((document.querySelector('#download a') || {{}}).href || '') !== {json.dumps(before)}"
                            f" && document.querySelector('#download a').href", 60)
    assert browser.evaluate(DONE), status(browser)
    code, data = fetch(href)
    assert code == 200, href
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float32) / 255


def editor_zoom(browser: Chromium) -> float:
    """The editor's zoom (its toolbar shows it as a percentage) once the picture has settled in the canvas."""
    read = r"""(() => { const el = Array.from(document.querySelectorAll('#t-editor *')).find(
        e => e.children.length === 0 && /^\d+%$/.test((e.textContent || '').trim()));
        return el ? parseFloat(el.textContent) / 100 : 0; })()"""
    last, deadline = -1.0, time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.5)
        zoom = browser.evaluate(read)
        if zoom and zoom == last:
            return zoom
        last = zoom
    raise AssertionError("the t editor never showed the picture")


def paint_left(browser: Chromium) -> None:
    """Horizontal strokes with the default brush (t = 1) over the left half, ending BRUSH_RADIUS before its edge."""
    zoom = editor_zoom(browser)
    x, y, w, h = browser.evaluate("(() => { const r = document.querySelector('#t-editor canvas')"
                                  ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()")
    left, top = x + w / 2 - LR_WIDTH * zoom / 2, y + h / 2 - LR_HEIGHT * zoom / 2
    for row in range(4, LR_HEIGHT, 20):  # rows 20 apart: strokes 2 x BRUSH_RADIUS wide overlap
        screen_y = top + row * zoom
        # from the middle outwards: a stroke starting at the left edge would start on the editor's tool bar
        browser.drag((left + PAINT_TO * zoom, screen_y), (left + 2 * zoom, screen_y), steps=5)
        time.sleep(0.1)  # let the editor finish the stroke before the next one starts


def set_global_t(browser: Chromium, value: str) -> None:
    browser.evaluate("(() => { const i = document.querySelector('#t input[type=number]'); i.focus(); i.select(); })()")
    browser.send("Input.insertText", {"text": value})
    browser.key("Enter")
    browser.wait_for(f"document.querySelector('#t input[type=range]').value === {json.dumps(value)}", 10)


def save_screenshot(browser: Chromium, folder: Path) -> Path:
    shot = browser.screenshot(folder / "app_full.png")
    image = Image.open(shot).convert("RGB")
    image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS).quantize(256)
    out = folder / "app.png"
    image.save(out, optimize=True)
    if os.environ.get("PERCEPTSR_WRITE_DOCS") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(out, ROOT / "docs" / "app.png")
    return out


def test_painted_t_changes_only_the_painted_half(browser: Chromium, server: str, files: dict[str, Path]) -> None:
    open_page(browser, server)
    assert browser.evaluate("document.querySelector('#model input').value") == MODEL_FILE
    upload(browser, files["image"])
    browser.wait_for("document.querySelector('#status').innerText.includes('upscales ×4')", 30)
    browser.wait_for("!!document.querySelector('#t-editor canvas')", 15)
    set_global_t(browser, "0")
    flat = run_and_download(browser)
    assert flat.shape == (LR_HEIGHT * 4, LR_WIDTH * 4, 3)

    paint_left(browser)
    painted = run_and_download(browser)
    diff = np.abs(painted - flat).max(axis=2)
    left = diff[:, : (LR_WIDTH // 2 - REACH) * 4]
    right = diff[:, (LR_WIDTH // 2 + REACH) * 4:]
    assert (left > 2 / 255).mean() > 0.5, "painting t = 1 on the left half did not change it"
    assert right.max() <= 1 / 255 + 1e-6, "the unpainted right half changed"
    shot = save_screenshot(browser, files["root"])
    assert shot.stat().st_size < 300_000

    # the page fetched nothing from anywhere but this server (no CDN fonts or scripts)
    names = browser.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert names and all(name.startswith(server) for name in names), [n for n in names if not n.startswith(server)]


def test_corrupt_upload_shows_one_line_error(browser: Chromium, server: str, files: dict[str, Path]) -> None:
    open_page(browser, server)
    upload(browser, files["corrupt"])
    text = browser.wait_for("(document.querySelector('#status .error') || {}).innerText", 30)
    assert text.strip().startswith("cannot read image corrupt.png: ")
    assert "\n" not in text.strip() and str(files["root"]) not in text


SAW_QUEUE_WATCH = """
window.sawQueue = false;
new MutationObserver(() => { if (document.body.innerText.includes('queue')) window.sawQueue = true; })
    .observe(document.body, {subtree: true, childList: true, characterData: true});
"""


def test_two_users_at_once_both_finish(browser: Chromium, server: str, files: dict[str, Path]) -> None:
    open_page(browser, server)
    first = browser.session
    target = browser.send("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
    second = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True)["sessionId"]
    try:
        browser.session = second
        browser.send("Page.enable")
        open_page(browser, server)
        for session in (second, first):
            browser.session = session
            upload(browser, files["big"])
            browser.wait_for("document.querySelector('#status').innerText.includes('upscales ×4')", 30)
        # the second tab records whether its page ever showed its place in the queue: the first run may be short,
        # so polling for the text could miss it
        browser.session = second
        browser.evaluate(SAW_QUEUE_WATCH)
        for session in (first, second):  # back to back: the second waits in the queue while the first runs
            browser.session = session
            browser.evaluate("document.querySelector('#run').click()")
        browser.wait_for("window.sawQueue", 20)  # the second saw its place
        for session in (first, second):
            browser.session = session
            browser.wait_for(DONE, 60)
            assert "3072×1536" in status(browser)
    finally:
        browser.session = first
        browser.send("Target.closeTarget", {"targetId": target}, browser=True)


def test_server_serves_no_other_file(server: str, files: dict[str, Path]) -> None:
    for path in (files["models"] / MODEL_FILE, files["image"], Path("/etc/passwd"), ROOT / "README.md"):
        assert fetch(f"{server}/gradio_api/file={path}")[0] in (403, 404), path
