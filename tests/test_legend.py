"""`perceptsr segment`'s colour pictures come with a legend: every class, its palette colour, its share."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from perceptsr.archs.sftgan import SEG_CLASSES
from perceptsr.conditions.seg import CLASS_COLORS, legend

README = Path(__file__).resolve().parents[1] / "README.md"


def test_legend_shows_every_class_colour() -> None:
    labels = np.zeros((20, 10), np.uint8)
    labels[:5] = 1
    key = (legend(labels)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    colours = {tuple(int(v) for v in pixel) for pixel in key.reshape(-1, 3)}
    assert set(CLASS_COLORS) <= colours  # one swatch per class
    assert key.shape[0] >= 8 * 16


def test_readme_palette_table_matches_the_code() -> None:
    rows = re.findall(r"^\| (\d) \| (\w+) \| `#([0-9a-f]{6})` \|", README.read_text(encoding="utf-8"), flags=re.M)
    assert [(int(i), name) for i, name, _ in rows] == list(enumerate(SEG_CLASSES))
    assert [tuple(bytes.fromhex(h)) for _, _, h in rows] == list(CLASS_COLORS)
