"""The measurement protocol: how SR and HR are compared, stated with every result.

Papers disagree: SRGAN, NatSR and ESRGAN report PSNR/SSIM on the MATLAB Y channel with `crop_border` = scale;
BasicSR's model zoo reports RGB. HR images are mod-cropped to the scale (so LR = HR / scale exactly) unless
`mod_crop` is off. Every measuring command takes these as `--crop-border`, `--y-channel`/`--rgb` and
`--no-mod-crop`, prints them and stores them beside its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from perceptsr.errors import InputError


@dataclass(frozen=True)
class Protocol:
    """scale: the SR factor; crop_border: pixels dropped at each edge before comparing (None: the scale);
    y_channel: compare on MATLAB's Y (BT.601 studio range) instead of RGB; mod_crop: crop HR to a multiple of scale."""

    scale: int
    crop_border: int | None = None
    y_channel: bool = True
    mod_crop: bool = True

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise InputError(f"scale must be >= 1, got {self.scale}")
        if self.crop_border is not None and self.crop_border < 0:
            raise InputError(f"crop border must be >= 0, got {self.crop_border}")

    @property
    def border(self) -> int:
        """The crop actually applied."""
        return self.scale if self.crop_border is None else self.crop_border

    def describe(self) -> str:
        """One line for tables and logs, e.g. `Y, crop 4, HR mod-cropped to 4`."""
        crop = f"crop {self.border}"
        mod = f"HR mod-cropped to {self.scale}" if self.mod_crop and self.scale > 1 else "HR not mod-cropped"
        return f"{'Y' if self.y_channel else 'RGB'}, {crop}, {mod}"

    def to_dict(self) -> dict[str, object]:
        return {"scale": self.scale, "crop_border": self.border, "y_channel": self.y_channel,
                "mod_crop": self.mod_crop}
