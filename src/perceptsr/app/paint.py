"""What the app's brushes mean: painted editor layers -> a t map or a repainted segmentation, and the overlays.

Pure numpy, no Gradio, so every rule here is tested without a browser. The page's editors paint RGBA layers over
a preview of the image; a painted pixel (alpha above half) takes the meaning of the nearest brush colour: one of
`T_LEVELS` for FxSR's t, one of the eight OST classes for SFTGAN. Unpainted pixels keep the global t, or the
automatic segmentation. Layers are at the preview's size; maps are cut at the model's sizes with nearest
neighbours, so a painted edge stays an edge (no blur that would spill t across it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perceptsr.archs.sftgan import SEG_CLASSES
from perceptsr.conditions.seg import CLASS_COLORS

T_LEVELS = tuple(round(i / 10, 1) for i in range(11))
# t colours: dark blue (t = 0, the distortion end) through teal to yellow (t = 1, the perception end), viridis'
# stops, so neighbouring levels stay distinct for the nearest-colour decoding.
_T_STOPS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
PAINTED_ALPHA = 128  # a layer pixel counts as painted from half opacity (stroke edges are antialiased)
OVERLAY_OPACITY = 0.45


def t_color(t: float) -> tuple[int, int, int]:
    """The display colour of a t value in [0,1] (the ramp through `_T_STOPS`)."""
    position = min(max(float(t), 0.0), 1.0) * (len(_T_STOPS) - 1)
    low = min(int(position), len(_T_STOPS) - 2)
    frac = position - low
    a, b = np.array(_T_STOPS[low], float), np.array(_T_STOPS[low + 1], float)
    return tuple(int(round(v)) for v in a + (b - a) * frac)


def hex_color(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


T_COLORS = tuple(t_color(t) for t in T_LEVELS)
T_BRUSH_COLORS = tuple(hex_color(c) for c in T_COLORS)
CLASS_BRUSH_COLORS = tuple(hex_color(c) for c in CLASS_COLORS)


def _nearest(rgb: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Index into `palette` of the nearest colour of every pixel of rgb (..., 3)."""
    colors = np.asarray(palette, dtype=np.int32)
    distance = ((rgb[..., None, :].astype(np.int32) - colors) ** 2).sum(-1)
    return distance.argmin(-1)


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """array (H,W,...) resized to size = (h, w) by nearest neighbour (pixel centres)."""
    height, width = array.shape[:2]
    if (height, width) == tuple(size):
        return array
    rows = np.minimum(((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64), width - 1)
    return array[rows][:, cols]


def _as_rgba(layer: np.ndarray) -> np.ndarray:
    layer = np.asarray(layer)
    if layer.ndim == 2:
        layer = np.repeat(layer[..., None], 3, axis=-1)
    if layer.shape[-1] == 3:  # no alpha: every pixel painted (a flattened upload)
        layer = np.concatenate([layer, np.full(layer.shape[:2] + (1,), 255, layer.dtype)], axis=-1)
    if layer.dtype != np.uint8:
        layer = np.clip(layer, 0, 255).astype(np.uint8)
    return layer


def painted_indices(layers: Sequence[np.ndarray], palette: Sequence[Sequence[int]],
                    size: tuple[int, int]) -> np.ndarray:
    """(h,w) int: for every pixel the palette index of the topmost painted layer there, -1 where none painted.

    Layers (H,W,4) uint8 are composited in order (later layers on top) and cut to `size` by nearest neighbour.
    """
    out = np.full(size, -1, dtype=np.int64)
    for layer in layers:
        rgba = resize_nearest(_as_rgba(layer), size)
        painted = rgba[..., 3] >= PAINTED_ALPHA
        if painted.any():
            out[painted] = _nearest(rgba[..., :3][painted], palette)
    return out


def t_map_from_layers(layers: Sequence[np.ndarray], size: tuple[int, int], base_t: float) -> np.ndarray:
    """The t map (h,w) float32 of painted layers: the brush's level where painted, `base_t` elsewhere."""
    index = painted_indices(layers, T_COLORS, size)
    levels = np.asarray(T_LEVELS, dtype=np.float32)
    return np.where(index >= 0, levels[np.maximum(index, 0)], np.float32(base_t)).astype(np.float32)


def t_overlay(image: np.ndarray, t_map: np.ndarray, opacity: float = OVERLAY_OPACITY) -> np.ndarray:
    """image (H,W,3) uint8 with the t map's colours blended over it (the map is resized to the image)."""
    t_map = resize_nearest(t_map, image.shape[:2])
    ramp = np.asarray([t_color(t) for t in np.linspace(0, 1, 256)], dtype=np.float32)
    colors = ramp[np.clip(np.round(t_map * 255), 0, 255).astype(np.int64)]
    return _blend(image, colors, opacity)


def _blend(image: np.ndarray, colors: np.ndarray, opacity: float) -> np.ndarray:
    mixed = image[..., :3].astype(np.float32) * (1 - opacity) + colors * opacity
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def seg_labels(probabilities: np.ndarray) -> np.ndarray:
    """(H,W) class indices of (1,8,H,W) or (8,H,W) probabilities."""
    probabilities = np.asarray(probabilities)
    return probabilities.reshape(-1, *probabilities.shape[-2:]).argmax(0)


def seg_colors(labels: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8: every pixel in its class colour (CLASS_COLORS, as `perceptsr segment` draws them)."""
    return np.asarray(CLASS_COLORS, dtype=np.uint8)[labels]


def seg_overlay(image: np.ndarray, labels: np.ndarray, opacity: float = 0.55) -> np.ndarray:
    """image (H,W,3) uint8 with the class colours of `labels` (resized to the image) blended over it."""
    colors = seg_colors(resize_nearest(labels, image.shape[:2])).astype(np.float32)
    return _blend(image, colors, opacity)


def repaint_seg(probabilities: np.ndarray, layers: Sequence[np.ndarray]) -> np.ndarray:
    """(1,8,H,W) float32 probabilities with painted pixels replaced by the certain (one-hot) painted class."""
    probs = np.array(probabilities, dtype=np.float32).reshape(1, len(SEG_CLASSES), *probabilities.shape[-2:])
    index = painted_indices(layers, CLASS_COLORS, probs.shape[-2:])
    painted = index >= 0
    if painted.any():
        one_hot = np.eye(len(SEG_CLASSES), dtype=np.float32)[index[painted]]  # (n, 8)
        probs[0][:, painted] = one_hot.T
    return probs


def _swatches(entries: list[tuple[str, str]], prefix: str = "") -> str:
    """A legend: for each (colour, text) a swatch in that colour followed by the text."""
    items = "".join(
        f'<span style="display:inline-flex;align-items:center;margin-right:10px">'
        f'<span style="width:14px;height:14px;background:{color};border:1px solid #555;margin-right:4px"></span>'
        f"{text}</span>" for color, text in entries)
    return f'<div class="perceptsr-legend">{prefix}{items}</div>'


def legend_html() -> str:
    """The class legend: a swatch in each class colour and its name."""
    return _swatches(list(zip(CLASS_BRUSH_COLORS, SEG_CLASSES, strict=True)))


def t_legend_html() -> str:
    """The t brush legend: each brush colour and the t it paints."""
    return _swatches([(color, f"{t:.1f}") for t, color in zip(T_LEVELS, T_BRUSH_COLORS, strict=True)], "brush t: ")
