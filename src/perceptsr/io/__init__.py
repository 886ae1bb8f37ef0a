"""Image files and pixels: reading and writing images (the only place images change format), MATLAB colour
conversion, and side-by-side comparison pictures."""
