"""Side-by-side comparison pictures: one row per image, one labelled column per model, and under each row a
magnified crop of the same textured region from every column.

At the full size, the difference between a PSNR model and a perceptual one is hard to see: both look sharp. The
texture is where they differ (smooth versus grain), so each row also shows one small region, chosen where the
bicubic upscale has the most gradient energy (the most texture to reconstruct), enlarged with nearest neighbour so
every pixel is visible. The region is outlined on the full-size pictures.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

LABEL_HEIGHT = 18
GAP = 6
CROP = 48  # HR pixels per side of the magnified region
ZOOM = 4  # nearest-neighbour magnification of the region
MAX_FIT_ZOOM = 8  # `zoom=None` fits the region to the column width, at least ZOOM and at most this
OUTLINE = (255, 32, 32)


def side_by_side(rows: list[dict[str, Tensor]], *, scale: int, crop: int | None = CROP, zoom: int | None = ZOOM,
                 reference: str | None = None, crops_only: bool = False) -> Tensor:
    """Tile `rows` (label -> (1,3,h,w) image) into one (1,3,H,W) picture; LR-sized entries are enlarged
    with nearest neighbour by `scale` so every column shows the same field of view at the same size.

    With `crop`, each row gets a second line: the crop x crop region of most texture (`texture_box`), from every
    column, enlarged `zoom` times with nearest neighbour and labelled like its column (`zoom=None`: as much as the
    narrowest column holds, between ZOOM and MAX_FIT_ZOOM, so a 2-pixel pattern spans 8 or more screen pixels).
    The region is found in the `reference` column when given (the ground truth: where the real texture is, whatever
    the models made of it), else in the bicubic upscale of the LR-sized column. `crops_only` keeps just the
    magnified lines: a compact figure (a model card's) where the texture is all that is compared.
    """
    columns = list(rows[0])
    font = _font()
    lines: list[list[tuple[str, np.ndarray]]] = []
    for row in rows:
        cells = [_enlarge(row[c], scale, row) for c in columns]
        pixels = [_pixels(cell) for cell in cells]
        if not crop:
            lines.append(list(zip(columns, pixels, strict=True)))
            continue
        box = texture_box(row[reference] if reference else _reference(row, scale), crop)
        top, left, size = box
        times = zoom or max(ZOOM, min(MAX_FIT_ZOOM, min(p.shape[1] for p in pixels) // size))
        crops = [np.kron(p[top:top + size, left:left + size], np.ones((times, times, 1), np.uint8)) for p in pixels]
        if not crops_only:
            lines.append([(c, _outlined(p, box)) for c, p in zip(columns, pixels, strict=True)])
        lines.append([(f"{c} (x{times} crop)", z) for c, z in zip(columns, crops, strict=True)])
    widths = [max(p.shape[1] for _, p in (line[i] for line in lines)) for i in range(len(columns))]
    width = sum(widths) + GAP * (len(columns) - 1)
    height = sum(max(p.shape[0] for _, p in line) + LABEL_HEIGHT + GAP for line in lines)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 0
    for line in lines:
        x = 0
        for (label, pixels), column_width in zip(line, widths, strict=True):
            draw.text((x + 2, y + 2), _fit(draw, label, column_width - 4, font), fill=(0, 0, 0), font=font)
            canvas.paste(Image.fromarray(pixels), (x, y + LABEL_HEIGHT))
            x += column_width + GAP
        y += max(p.shape[0] for _, p in line) + LABEL_HEIGHT + GAP
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)[None].float() / 255


def texture_box(image: Tensor, size: int) -> tuple[int, int, int]:
    """(top, left, side) of the size x size window of `image` (1,3,H,W) with the most texture; the side shrinks to
    fit a smaller image.

    Texture is gradient energy (squared horizontal plus vertical differences of the gray image) clipped at the
    median of the pixels that have any, so a window scores by how many of its pixels carry detail: unclipped, one
    high-contrast edge (a highlight, an outline) outweighs a whole window of fur or grain, where a PSNR and a
    perceptual model differ most.
    """
    gray = image[0].float().mean(0).numpy().astype(np.float64)
    height, width = gray.shape
    side = max(1, min(size, height, width))
    energy = np.zeros_like(gray)
    energy[:, 1:] += np.diff(gray, axis=1) ** 2
    energy[1:, :] += np.diff(gray, axis=0) ** 2
    detail = energy[energy > 1e-12]  # the median of the pixels that have any: flat areas would pull it to 0
    if detail.size:
        energy = np.minimum(energy, np.median(detail))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = (integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side])
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left), side


def _reference(row: dict[str, Tensor], scale: int) -> Tensor:
    """The HR-size MATLAB-bicubic upscale of the row's LR-sized entry (or its first entry when none is LR-sized)."""
    target = max(t.shape[-1] for t in row.values())
    for image in row.values():
        if image.shape[-1] * scale == target:
            from perceptsr.data.resize import imresize  # resize sits beside io; imported here to keep io importable

            return imresize(image.float(), scale).clamp(0, 1)
    return next(iter(row.values()))


def _pixels(image: Tensor) -> np.ndarray:
    return (image[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def _outlined(pixels: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """`pixels` with the crop region outlined (a 1-pixel frame just outside it where there is room)."""
    top, left, side = box
    picture = Image.fromarray(pixels)
    frame = (max(0, left - 1), max(0, top - 1), min(pixels.shape[1] - 1, left + side),
             min(pixels.shape[0] - 1, top + side))
    ImageDraw.Draw(picture).rectangle(frame, outline=OUTLINE)
    return np.asarray(picture)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, label: str, width: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont
         ) -> str:
    """`label`, shortened with an ellipsis to fit `width` pixels."""
    if draw.textlength(label, font=font) <= width:
        return label
    while label and draw.textlength(label + "…", font=font) > width:
        label = label[:-1]
    return label + "…"


def _enlarge(image: Tensor, scale: int, row: dict[str, Tensor]) -> Tensor:
    target = max(t.shape[-1] for t in row.values())
    if image.shape[-1] * scale == target:
        return image.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    return image
