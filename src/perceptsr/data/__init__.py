"""Training and validation data: the MATLAB bicubic degradation, HR-folder datasets and patch sampling, and the
method-specific data sources (NatSR's NMD samples, SFTGAN's segmentation pairs)."""
