"""losses.lattice_loss: zero without a periodic difference, large for a checkerboard or grid at the sampling
lattice, small for texture-like (non-periodic) differences, and its gradient removes a lattice."""

from __future__ import annotations

import torch

from perceptsr.losses import lattice_loss


def image(seed: int = 0, size: int = 96) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, size, size, generator=generator)


def lattice(size: int, period: int, amplitude: float) -> torch.Tensor:
    """A pattern repeating every `period` pixels on both axes (a checkerboard for period 2), zero mean."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    pattern = torch.cos(2 * torch.pi * ys / period) + torch.cos(2 * torch.pi * xs / period)
    return amplitude * pattern.view(1, 1, size, size).expand(2, 3, size, size)


def test_zero_for_equal_images_and_for_a_constant_offset() -> None:
    hr = image()
    assert float(lattice_loss(hr, hr, 4)) == 0.0
    assert float(lattice_loss(hr + 0.1, hr, 4)) < 1e-6  # a colour shift is no lattice


def test_a_grid_at_the_lattice_costs_its_amplitude_and_noise_little() -> None:
    hr = image()
    grid = float(lattice_loss(hr + lattice(96, 4, 4 / 255), hr, 4))
    board = float(lattice_loss(hr + lattice(96, 2, 4 / 255), hr, 4))
    noise = float(lattice_loss(hr + (image(1) - 0.5) * 8 / 255, hr, 4))
    assert grid > 3e-3 and board > 3e-3
    assert noise < grid / 5  # same size of difference, not periodic: averages out over a phase
    assert float(lattice_loss(hr + lattice(96, 3, 4 / 255), hr, 4)) < grid / 5  # another period: not this lattice


def test_odd_sizes_and_gradient_descent_removes_the_lattice() -> None:
    hr = image(size=50)[..., :50, :47]
    sr = (hr + lattice(50, 4, 4 / 255)[..., :47]).clone().requires_grad_(True)
    before = lattice_loss(sr, hr, 4).item()
    optimizer = torch.optim.SGD([sr], lr=10.0)
    for _ in range(100):
        optimizer.zero_grad()
        lattice_loss(sr, hr, 4).backward()
        optimizer.step()
    assert lattice_loss(sr, hr, 4).item() < before / 4


def test_antialiased_discriminator_is_blind_to_a_checkerboard_and_keeps_the_keys() -> None:
    from perceptsr.archs.natsr import NatSRDiscriminator, NatSRDiscriminatorConfig, blur_downsample

    board = lattice(32, 2, 1.0)[:1, :1]
    assert blur_downsample(board)[..., 1:-1, 1:-1].abs().max() < 1e-6  # the Nyquist pattern is gone (borders: padding)
    assert blur_downsample(torch.ones(1, 1, 32, 32))[..., 1:-1, 1:-1].sub(1).abs().max() < 1e-6  # flat stays flat
    torch.manual_seed(0)
    plain = NatSRDiscriminator(NatSRDiscriminatorConfig(num_feat=2))
    blurred = NatSRDiscriminator(NatSRDiscriminatorConfig(num_feat=2, antialias=True))
    assert plain.state_dict().keys() == blurred.state_dict().keys()
    blurred.load_state_dict(plain.state_dict())
    for size in (16, 32, 96):
        assert blurred(torch.rand(2, 3, size, size)).shape == (2, 1)
