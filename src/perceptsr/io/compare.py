"""Side-by-side comparison pictures: one row per image, one labelled column per model."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

LABEL_HEIGHT = 14
GAP = 4


def side_by_side(rows: list[dict[str, Tensor]], *, scale: int) -> Tensor:
    """Tile `rows` (label -> (1,3,h,w) image) into one (1,3,H,W) picture; LR-sized entries are enlarged
    with nearest neighbour by `scale` so every column shows the same field of view at the same size."""
    columns = list(rows[0])
    cells = []
    for row in rows:
        cells.append([_enlarge(row[c], scale, row) for c in columns])
    width = max(sum(c.shape[-1] for c in r) + GAP * (len(r) - 1) for r in cells)
    height = sum(max(c.shape[-2] for c in r) + LABEL_HEIGHT + GAP for r in cells)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 0
    for row in cells:
        x = 0
        for label, cell in zip(columns, row, strict=True):
            draw.text((x + 2, y + 1), label, fill=(0, 0, 0))
            pixels = (cell[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            canvas.paste(Image.fromarray(pixels), (x, y + LABEL_HEIGHT))
            x += cell.shape[-1] + GAP
        y += max(c.shape[-2] for c in row) + LABEL_HEIGHT + GAP
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)[None].float() / 255


def _enlarge(image: Tensor, scale: int, row: dict[str, Tensor]) -> Tensor:
    target = max(t.shape[-1] for t in row.values())
    if image.shape[-1] * scale == target:
        return image.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    return image
