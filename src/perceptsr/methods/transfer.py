"""Partial weight transfer: start a generator from a smaller relative (SRResNet -> SFTNet, RRDB -> FxSR).

One rule for every method's `init`: every source tensor must find its place with its shape, every generator
tensor must come from the source unless the caller lets it start fresh, and the result loads strictly.
The two known transfers, `init_from_srresnet` and `init_from_rrdb`, both go through `transfer_weights`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from torch import Tensor, nn

from perceptsr.archs.blocks import SFTLayer, default_init_weights
from perceptsr.archs.fxsr import FxSRNet
from perceptsr.archs.sftgan import SFTNet
from perceptsr.errors import CheckpointError

logger = logging.getLogger(__name__)


def transfer_weights(network: nn.Module, source: Mapping[str, Tensor], *, fresh: Callable[[str], bool],
                     rename: Mapping[str, str] | None = None, reset: Callable[[], None] | None = None,
                     hint: str = "") -> list[str]:
    """Load `source` into `network`; keys for which `fresh` holds may be missing and keep their initialisation.

    `rename` maps the network's keys to the source's (identity when None: then the source may also hold
    fresh keys, e.g. a whole FxSR model). `reset` re-initialises the fresh layers before loading. Returns the
    network keys that were not loaded, in state-dict order. Errors name the first offending key, plus `hint`.
    """
    own = network.state_dict()
    rename = dict(rename) if rename is not None else {key: key for key in own if key in source}
    used = set(rename.values())
    unused = [key for key in source if key not in used]
    if unused:
        raise CheckpointError(f"init weights have key {unused[0]!r}, which the generator does not have{hint}")
    for ours, theirs in rename.items():
        if theirs not in source:
            raise CheckpointError(f"init weights lack {theirs!r}{hint}")
        if tuple(source[theirs].shape) != tuple(own[ours].shape):
            raise CheckpointError(f"init weights: {theirs} has shape {list(source[theirs].shape)}, the generator's "
                                  f"{ours} needs {list(own[ours].shape)}{hint}")
    missing = [key for key in own if key not in rename and not fresh(key)]
    if missing:
        raise CheckpointError(f"init weights lack {missing[0]!r} ({len(missing)} generator key(s) missing){hint}")
    if reset is not None:
        reset()
    loaded = network.state_dict()
    loaded.update({ours: source[theirs] for ours, theirs in rename.items()})
    network.load_state_dict(loaded, strict=True)
    kept = [key for key in own if key not in rename]
    if kept:
        logger.info("init: %d generator tensors stay freshly initialised: %s", len(kept), ", ".join(kept))
    return kept


def is_sft(name: str) -> bool:
    """SFTNet's SFT and condition-net parameters, by the original's rule ('SFT' in k or 'Cond' in k)."""
    return "SFT" in name or "Cond" in name


def srresnet_pairs(num_block: int) -> list[tuple[str, str]]:
    """(SFTNet key, SRResNet key) of every layer both have, as BSR-old `transfer_params_sft.py` copies them."""
    layers = [("conv0", "conv_first")]
    for i in range(num_block):
        layers += [(f"sft_branch.{i}.conv0", f"body.{i}.conv1"), (f"sft_branch.{i}.conv1", f"body.{i}.conv2")]
    layers += [(f"sft_branch.{num_block + 1}", "conv_body"), ("HR_branch.0", "upsampler.0"),
               ("HR_branch.3", "upsampler.3"), ("HR_branch.6", "conv_hr"), ("HR_branch.8", "conv_last")]
    return [(f"{ours}.{p}", f"{theirs}.{p}") for ours, theirs in layers for p in ("weight", "bias")]


def init_from_srresnet(generator: SFTNet, state: dict[str, Tensor]) -> list[str]:
    """Load an SRResNet (noBN, ReLU, `srresnet` arch keys) into `generator`, SFT/condition layers fresh.

    Every source key must be used and every shape match (a CheckpointError names the first that does not).
    The fresh layers get kaiming-normal ×0.1 weights and zero biases. Returns the keys that were initialised
    fresh, in state-dict order.
    """
    blocks, form = generator.config.num_block, generator.config.form
    fresh = [m for m in generator.modules() if isinstance(m, SFTLayer)] + [generator.CondNet]
    return transfer_weights(
        generator, state, rename=dict(srresnet_pairs(blocks)), fresh=is_sft,
        reset=lambda: default_init_weights(fresh, 0.1),
        hint=f" (expected a noBN ReLU SRResNet with {blocks} blocks, form {form} and equal widths, e.g. the "
             "converted SRGAN_bicx4_noBN_DIV2K.pth)")


def init_from_rrdb(generator: FxSRNet, state: dict[str, Tensor]) -> list[str]:
    """Load an RRDB PSNR model (SFT layers and condition net stay fresh) or a whole FxSR model into `generator`.

    Every RRDB key must be present with the right shape; `conv_up3` may be missing (an x8 FxSR started from
    an x4 model keeps a fresh third stage). Keys the generator does not have are refused.
    """
    def conditional(key: str) -> bool:
        return ".sft" in key or key.startswith("cond_net.")

    whole = any(conditional(key) for key in state)
    return transfer_weights(generator, state,
                            fresh=lambda key: key.startswith("conv_up3.") or (not whole and conditional(key)))
