"""The app's page: Gradio components and the handlers that connect them to `runner` and `paint`.

One upload feeds two editors: the t editor (FxSR: paint t levels over the picture) and the segmentation editor
(SFTGAN: the automatic classes in their colours, repainted with a class brush); the page shows the one the chosen
model takes. `Upscale` runs in the queue, one run at a time; the page shows a waiting user their place and the
tile progress, and `Cancel` stops a run before its next tile. Errors a user can cause are one line in the status.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch

from perceptsr.app import paint, runner
from perceptsr.app.runner import Catalog
from perceptsr.conditions.tmap import DEFAULT_T
from perceptsr.errors import PerceptsrError
from perceptsr.inference.upscale import RunOptions
from perceptsr.io.images import SUPPORTED_SUFFIXES

PREVIEW_SIDE = 1024  # the editors show the image at most this big; paint is cut to the model's sizes
DISPLAY_SIDE = 4096  # the comparison shows results at most this big (the download is always full size)
SEG_SESSIONS = 4  # automatic segmentations kept in memory, most recent sessions first
CSS = """
#status p { margin: 0; }
#status .error { color: #b91c1c; font-weight: 600; }
.perceptsr-legend { font-size: 0.9em; line-height: 1.8; }
"""


@dataclass(frozen=True)
class Settings:
    """What the command line fixed for every request."""

    catalog: Catalog
    run: RunOptions
    max_pixels: int
    work_dir: Path


def error_text(error: Exception, upload: str | None) -> str:
    """The one-line message, naming an upload by its file name rather than the server's temporary path."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if upload:
        text = text.replace(str(upload), Path(upload).name)
    return text


def status_error(text: str) -> str:
    return f'<span class="error">{_escape(text)}</span>'


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class App:
    """Handlers over the shared settings; per-session state (cancel flags, segmentations) lives here too."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cancel: dict[str, threading.Event] = {}
        self.segs: OrderedDict[tuple[str, str], np.ndarray | None] = OrderedDict()
        self.lock = threading.Lock()
        self.runs = itertools.count(1)

    # ---- loading ----

    def _model(self, label: str) -> Any:
        return runner.load_entry(self.settings.catalog.entry(label), self.settings.run)

    def _segmentation(self, upload: str, image: Any) -> np.ndarray | None:
        key = (upload, str(self.settings.catalog.seg_model))
        with self.lock:
            if key in self.segs:
                self.segs.move_to_end(key)
                return self.segs[key]
        probs = runner.auto_segmentation(self.settings.catalog, image.rgb)
        with self.lock:
            self.segs[key] = probs
            while len(self.segs) > SEG_SESSIONS:
                self.segs.popitem(last=False)
        return probs

    # ---- handlers ----

    def on_image(self, label: str, upload: str | None, t: float) -> tuple:
        """A new image or model: fill the editors for the model's kind of condition."""
        hidden = gr.update(visible=False)
        empty = (gr.update(value=None), hidden, gr.update(value=None), hidden, gr.update(value=""), "", None, None)
        if not upload:
            return empty
        try:
            model = self._model(label)
            image = runner.load_upload(upload, self.settings.max_pixels)
            kind = runner.model_kind(model)
            picture = runner.preview(image, PREVIEW_SIDE)
            seg_value, note, seg_visible = None, "", False
            if kind == "seg":
                probs = self._segmentation(upload, image)
                if probs is None:
                    note = runner.NO_SEG
                else:
                    labels = paint.seg_labels(probs)
                    seg_value = {"background": paint.seg_overlay(picture, labels), "layers": [], "composite": None}
                    seg_visible = True
        except PerceptsrError as error:
            return (*empty[:5], status_error(error_text(error, upload)), None, None)
        height, width = image.rgb.shape[-2:]
        t_value = {"background": picture, "layers": [], "composite": None}
        overlay = paint.t_overlay(picture, np.full(picture.shape[:2], t, np.float32))
        info = f"{Path(upload).name}: {width}×{height}, {image.bit_depth}-bit; {label} upscales ×{model.scale}"
        return (gr.update(value=t_value), gr.update(visible=kind == "t"), gr.update(value=seg_value),
                gr.update(visible=seg_visible), gr.update(value=note, visible=bool(note)), _escape(info),
                overlay if kind == "t" else None, None)

    def on_paint(self, editor: dict | None, t: float) -> np.ndarray | None:
        """The t map as an overlay on the picture, whenever the brush or the global t changes."""
        if not editor or editor.get("background") is None:
            return None
        background = np.asarray(editor["background"])[..., :3]
        t_map = paint.t_map_from_layers(editor.get("layers") or [], background.shape[:2], t)
        return paint.t_overlay(background, t_map)

    def on_run(self, label: str, upload: str | None, t: float, t_editor: dict | None, seg_editor: dict | None,
               request: gr.Request, progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008
        """Run the chosen model with the painted conditions; the result against bicubic, and the download."""
        event = self.cancel.setdefault(request.session_hash or "", threading.Event())
        event.clear()
        if not upload:
            return gr.update(), gr.update(), status_error("upload an image first"), gr.update()
        started = time.monotonic()
        try:
            model = self._model(label)
            image = runner.load_upload(upload, self.settings.max_pixels)
            conditions = self._conditions(model, image, upload, t, t_editor, seg_editor)
            progress(0, desc="upscaling")
            sr, alpha = runner.run_model(model, image, conditions, self.settings.run, cancel=event)
            folder = self.settings.work_dir / "results" / (request.session_hash or "local")
            folder.mkdir(parents=True, exist_ok=True)
            path = runner.save_result(folder, image, sr, alpha, label, next(self.runs))
        except runner.CancelledError:
            return gr.update(), gr.update(), "cancelled", gr.update()
        except PerceptsrError as error:
            return gr.update(), gr.update(), status_error(error_text(error, upload)), gr.update()
        compare = (_display(runner.bicubic(image, model.scale)), _display(sr))
        overlay = gr.update()
        if "t" in conditions:  # the map this run used, over the picture
            overlay = paint.t_overlay(runner.preview(image, PREVIEW_SIDE), conditions["t"][0, 0].numpy())
        seconds = time.monotonic() - started
        done = f"{label}: {sr.shape[-1]}×{sr.shape[-2]} in {seconds:.1f} s ({image.bit_depth}-bit PNG to download)"
        return compare, str(path), _escape(done), overlay

    def _conditions(self, model: Any, image: Any, upload: str, t: float, t_editor: dict | None,
                    seg_editor: dict | None) -> dict[str, torch.Tensor]:
        seg = self._segmentation(upload, image) if runner.model_kind(model) == "seg" else None
        return runner.conditions_for(model, image, t=t, t_layers=(t_editor or {}).get("layers") or [], seg=seg,
                                     seg_layers=(seg_editor or {}).get("layers") or [])

    def on_cancel(self, request: gr.Request) -> str:
        event = self.cancel.get(request.session_hash or "")
        if event is not None:
            event.set()
        return "cancelled"

    def on_leave(self, request: gr.Request) -> None:
        self.cancel.pop(request.session_hash or "", None)


def _display(rgb: torch.Tensor) -> np.ndarray:
    pixels = runner.to_uint8(rgb)
    height, width = pixels.shape[:2]
    factor = max(height, width) / DISPLAY_SIDE
    if factor > 1:
        pixels = paint.resize_nearest(pixels, (round(height / factor), round(width / factor)))
    return pixels


def build(settings: Settings) -> gr.Blocks:
    """The page. Component ids (elem_id) are what the browser tests address."""
    app = App(settings)
    labels = list(settings.catalog.models)
    with gr.Blocks(title="perceptsr app") as page:
        gr.Markdown("## perceptsr: paint where the picture should be sharp, and see it")
        with gr.Row():
            with gr.Column(scale=2):
                model = gr.Dropdown(labels, value=labels[0] if labels else None, label="Model", elem_id="model")
                upload = gr.File(label=f"Image ({', '.join(s.lstrip('.') for s in SUPPORTED_SUFFIXES)})",
                                 file_types=list(SUPPORTED_SUFFIXES), type="filepath", elem_id="upload")
                with gr.Row():
                    run_button = gr.Button("Upscale", variant="primary", elem_id="run")
                    cancel_button = gr.Button("Cancel", elem_id="cancel")
                status = gr.Markdown(elem_id="status")
                with gr.Group(visible=False) as t_group:
                    t = gr.Slider(0, 1, value=DEFAULT_T, step=0.05, elem_id="t",
                                  label="t where not painted (0 = faithful, 1 = perceptual)")
                    gr.HTML(paint.t_legend_html())
                    t_editor = gr.ImageEditor(
                        type="numpy", image_mode="RGBA", sources=(), transforms=(), layers=False,
                        brush=gr.Brush(colors=[(c, 0.6) for c in paint.T_BRUSH_COLORS],
                                       default_color=(paint.T_BRUSH_COLORS[-1], 0.6), color_mode="fixed"),
                        eraser=gr.Eraser(), label="Paint t (brush colour = t, see the legend; size in the brush menu)",
                        elem_id="t-editor", height=380)
                    t_overlay = gr.Image(label="t map overlay", interactive=False, elem_id="t-overlay", height=220)
                seg_note = gr.Markdown(visible=False, elem_id="seg-note")
                with gr.Group(visible=False) as seg_group:
                    gr.HTML(paint.legend_html())
                    seg_editor = gr.ImageEditor(
                        type="numpy", image_mode="RGBA", sources=(), transforms=(), layers=False,
                        brush=gr.Brush(colors=list(paint.CLASS_BRUSH_COLORS), default_color=paint.CLASS_BRUSH_COLORS[1],
                                       color_mode="fixed"),
                        eraser=gr.Eraser(), label="Segmentation (paint a class to repaint a region)",
                        elem_id="seg-editor", height=380)
            with gr.Column(scale=3):
                compare = gr.ImageSlider(label="bicubic | result (drag to wipe, scroll to zoom)", type="numpy",
                                         format="png", elem_id="compare", max_height=720)
                download = gr.File(label="Download the result", elem_id="download", interactive=False)

        image_outputs = [t_editor, t_group, seg_editor, seg_group, seg_note, status, t_overlay, compare]
        for trigger in (upload.change, model.change):
            trigger(app.on_image, inputs=[model, upload, t], outputs=image_outputs, api_visibility="undocumented")
        for trigger in (t_editor.change, t_editor.input, t_editor.apply, t.release):
            trigger(app.on_paint, inputs=[t_editor, t], outputs=[t_overlay], concurrency_limit=None,
                    show_progress="hidden", trigger_mode="always_last",
                    api_visibility="undocumented")
        running = run_button.click(app.on_run, inputs=[model, upload, t, t_editor, seg_editor],
                                   outputs=[compare, download, status, t_overlay], api_name="upscale")
        cancel_button.click(app.on_cancel, outputs=[status], cancels=[running], queue=False,
                            api_visibility="undocumented")
        page.unload(app.on_leave)
    return page
