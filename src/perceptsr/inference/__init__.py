"""Running a generator on images: device and precision, tiling, the fused fast path, the allocator settings,
and the `perceptsr bench` measurements of it."""
