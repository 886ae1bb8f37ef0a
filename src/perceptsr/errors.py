"""Errors a user can cause. The CLI prints their message as one line and exits 2.

Everything else (a bug) keeps its traceback: only these are the user's fault.
"""


class PerceptsrError(Exception):
    """Base of every error caused by the user's input, files or configuration."""


class InputError(PerceptsrError):
    """An image, path, size, scale or condition map that cannot be used."""


class ConfigError(PerceptsrError):
    """A configuration file or --set override that does not fit the schema."""


class CheckpointError(PerceptsrError):
    """A checkpoint or release file that is corrupt, foreign or incompatible."""


MAX_NAMED_KEYS = 5


def describe_mismatch(module: object, state_dict: dict, error: BaseException | None = None) -> str:
    """Why `state_dict` does not fit `module`, in one line naming at most MAX_NAMED_KEYS keys and counting the rest:
    "missing 45 keys (body.0.weight, ... and 40 more); unexpected 2 keys (...); 1 of another shape (conv.weight:
    [64, 3, 3, 3] here, [32, 3, 3, 3] in the file)". A strict `load_state_dict` error lists every key on one
    enormous line; this is what its callers show instead. Falls back to the error's first line."""
    own = module.state_dict()  # type: ignore[attr-defined]
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    shapes = [f"{key}: {list(own[key].shape)} here, {list(state_dict[key].shape)} in the file" for key in own
              if key in state_dict and hasattr(state_dict[key], "shape")
              and tuple(own[key].shape) != tuple(state_dict[key].shape)]
    groups = [(what, items) for what, items in (("missing", missing), ("unexpected", unexpected),
                                                 ("of another shape", shapes)) if items]
    counts = [min(1, len(items)) for _, items in groups]  # every kind named once, the rest of the names in order
    for index, (_, items) in enumerate(groups):
        counts[index] += min(len(items) - counts[index], MAX_NAMED_KEYS - sum(counts))
    parts = []
    for (what, items), count in zip(groups, counts, strict=True):
        named = items[:count]
        rest = f" and {len(items) - len(named)} more" if len(items) > len(named) else ""
        noun = "key" if len(items) == 1 else "keys"
        head = f"{len(items)} {noun} {what}" if what == "of another shape" else f"{what} {len(items)} {noun}"
        parts.append(f"{head} ({', '.join(named)}{rest})")
    if parts:
        return "; ".join(parts)
    text = str(error or "").strip().splitlines()
    return text[0] if text else "the weights do not fit"
