"""conditions/texture.py: the gate that lets regions in by a strength (fxsr_nat's region target, fxsr_msrresnet's
texture_gate) and the LR texture strength it reads: zero on flat regions and along a straight edge, not in
texture."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from perceptsr.conditions.texture import region_gate, texture_gated_t, texture_strength


@settings(max_examples=50, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(1e-3, 0.2), st.integers(0, 2**16))
def test_the_gate_opens_with_the_share_strongest_regions_first(low: float, high: float, threshold: float,
                                                               seed: int) -> None:
    low, high = min(low, high), max(low, high)
    strength = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.3
    assert torch.equal(region_gate(strength, 0.0, threshold), torch.zeros_like(strength))
    assert torch.equal(region_gate(strength, 1.0, threshold), torch.ones_like(strength))
    gates = [region_gate(strength, share, threshold) for share in (low, high)]
    assert all(float(g.min()) >= 0 and float(g.max()) <= 1 for g in gates)
    assert bool((gates[0] <= gates[1] + 1e-12).all())  # more is let in as the share grows
    order = strength.flatten().argsort()
    assert bool((gates[1].flatten()[order].diff() >= -1e-12).all())  # a stronger pixel is never let in less


def test_texture_strength_is_zero_on_flat_regions_and_straight_edges_and_not_in_texture() -> None:
    flat = torch.full((1, 3, 24, 24), 0.4)
    edge = flat.clone()
    edge[..., 12:] = 0.9  # a vertical step edge: every gradient points along x
    ramp = torch.linspace(0, 1, 24).view(1, 1, 1, 24).expand(1, 3, 24, 24)
    noise = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    for image in (flat, edge, ramp, edge.transpose(-1, -2)):
        assert float(texture_strength(image).max()) < 1e-6
    assert float(texture_strength(noise).mean()) > 0.05
    assert texture_strength(noise).shape == (1, 1, 24, 24)


def test_a_gated_t_keeps_its_ends_turns_texture_first_and_stays_local() -> None:
    lr = torch.full((2, 3, 20, 30), 0.5)
    lr[..., :, :12] = torch.rand(2, 3, 20, 12, generator=torch.Generator().manual_seed(1))  # texture on the left
    for level in (0.0, 1.0):
        assert torch.equal(texture_gated_t(torch.full((2, 1, 1, 1), level), lr, 0.01),
                           torch.full((2, 1, 20, 30), level))
    half = texture_gated_t(torch.full((2, 1, 1, 1), 0.3), lr, 0.01)
    assert float(half[..., 2:-2, :8].min()) == 1.0 and float(half[..., 20:].max()) == 0.0
    painted = torch.zeros(2, 1, 20, 30)
    painted[..., 5:10, 3:6] = 0.3  # a painted patch: the gate reads each pixel's own t only
    gated = texture_gated_t(painted, lr, 0.01)
    assert torch.equal(gated[painted == 0], torch.zeros_like(gated[painted == 0]))
    assert torch.equal(gated[painted > 0], half[painted > 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # computed in float32 whatever the autocast
        assert torch.equal(texture_gated_t(painted, lr, 0.01), gated)
