"""perceptsr: perception-oriented single-image super-resolution.

The Python API reads like the command line (the same models, options and code paths):

    import perceptsr
    sr = perceptsr.upscale("photo.png")                      # a PIL image, x4 with the default model
    sr = perceptsr.upscale(array, "natsr-x4", tile=256)      # numpy in, numpy out (same dtype); tensors likewise
    perceptsr.save(sr, "photo_x4.png")                       # 8/16-bit, gray, RGBA: as `perceptsr upscale` writes
    model = perceptsr.load_model("srresnet-x4")              # eval mode, no gradients; model(lr) -> unclamped SR
    lr = perceptsr.degrade(hr, 4)                            # the papers' LR (modcrop + MATLAB bicubic 1/4)

Every function takes a path, a PIL image, a numpy array (H x W [x C], uint8/uint16/float) or a tensor
(N x 3 x H x W in [0,1]) and returns the kind it was given (a path gives a PIL image). Errors a caller can cause
are `perceptsr.PerceptsrError`s (`InputError` for images, names and options) with a one-line message.
"""

from perceptsr.api import degrade, load_model, save, upscale
from perceptsr.errors import CheckpointError, ConfigError, InputError, PerceptsrError

__all__ = ["CheckpointError", "ConfigError", "InputError", "PerceptsrError", "degrade", "load_model", "save",
           "upscale"]
__version__ = "0.1.0"
