"""Upscaling a collection across processes (`torchrun --nproc_per_node N -m perceptsr upscale DIR -o OUT`).

Every rank lists the same inputs and computes the same split from image headers alone, so no rank has to tell
another what to do: the split is deterministic (pixel counts, then paths) and needs no communication. Each rank
records what it finished in its own part file (`.manifest.rank<N>.jsonl`, one JSON line per output, appended as it
goes, so a crash leaves the record of what was done); after a barrier rank 0 merges the parts, in input order, into
`manifest.jsonl`, written atomically. Outputs are written atomically, so an output that exists is complete: that is
what lets `--skip-existing` resume a killed run without writing anything twice.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from perceptsr.engine import distributed
from perceptsr.engine.distributed import Dist
from perceptsr.errors import InputError, PerceptsrError
from perceptsr.zoo.weights import file_sha256

MANIFEST = "manifest.jsonl"
# Ranks finish their shares at different times; the default collective timeout (30 minutes) would end a long run
# whose shares differ by more than that, so the barrier and the gathers use their own group with this timeout.
SYNC_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class Job:
    """One input and the output it is written to."""

    input: Path
    output: Path


def _visible(name: str) -> bool:
    return not name.startswith(".")


def list_jobs(inputs: Sequence[str | Path], output: Path, *, recursive: bool = False) -> list[Job]:
    """The inputs (files and folders, in the order given; a folder's images sorted) and their outputs.

    Without `recursive`, a folder's own images go to `output/<stem>.png` (io.images.list_images). With it, a folder is
    walked (dot files and dot folders skipped, symlinked folders not followed, the output folder left out) and each
    image goes to `output/<path relative to that folder>` with a .png suffix, keeping the tree. Two inputs with one
    output are refused before any work.
    """
    from perceptsr.io.images import SUPPORTED_SUFFIXES, list_images

    if not recursive:
        return [Job(path, output / f"{path.stem}.png") for path in list_images(inputs)]
    skip = output.resolve()
    jobs: list[Job] = []
    for item in map(Path, inputs):
        if not item.is_dir():
            jobs.extend(Job(path, output / f"{path.stem}.png") for path in list_images([item]))
            continue
        found = []
        for root, folders, files in os.walk(item):
            here = Path(root)
            folders[:] = sorted(f for f in folders if _visible(f) and (here / f).resolve() != skip)
            found.extend(here / f for f in files if _visible(f) and Path(f).suffix.lower() in SUPPORTED_SUFFIXES
                         and (here / f).is_file())
        if not found:
            raise InputError(f"{item}: folder has no images ({', '.join(SUPPORTED_SUFFIXES)}), even in subfolders")
        jobs.extend(Job(path, output / path.relative_to(item).with_suffix(".png")) for path in sorted(found))
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.output in seen:
            raise InputError(f"{seen[job.output]} and {job.input} would both be written to {job.output}")
        seen[job.output] = job.input
    return jobs


def image_pixels(path: Path) -> int:
    """Width x height from the file's header (nothing decoded); 0 for a file that does not open, which the run
    itself then reports."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - any unreadable header: the reader names the problem later
        return 0
    return width * height


def split(jobs: Sequence[Job], world_size: int, pixels: Callable[[Path], int] = image_pixels) -> list[list[Job]]:
    """The jobs in `world_size` shares of near-equal pixel count: largest first into the least-loaded share (equal
    sizes by path, equal loads to the lower rank). Each share keeps the input order. Every rank computes the same
    split from the same list."""
    if world_size <= 1:
        return [list(jobs)]
    order = {job: index for index, job in enumerate(jobs)}
    sized = sorted(((pixels(job.input), job) for job in jobs), key=lambda pair: (-pair[0], str(pair[1].input)))
    loads = [(0, rank) for rank in range(world_size)]
    shares: list[list[Job]] = [[] for _ in range(world_size)]
    for size, job in sized:
        load, rank = heapq.heappop(loads)
        shares[rank].append(job)
        heapq.heappush(loads, (load + max(size, 1), rank))  # an unreadable file still counts as one job
    return [sorted(share, key=order.__getitem__) for share in shares]




def error_text(error: BaseException) -> str:
    """The error as one line (a file name may hold a newline)."""
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or text}"
    return " ".join(text.split())


def part_path(folder: Path, rank: int) -> Path:
    return folder / f".manifest.rank{rank}.jsonl"


class Recorder:
    """This rank's part of the manifest: one JSON line per finished, skipped or failed job, flushed as it comes.
    The file is created with the first line, so a run that records nothing leaves nothing behind. Make it after
    the barrier that follows the output checks, and only rank 0 reads the parts after the final barrier."""

    def __init__(self, folder: Path, rank: int) -> None:
        self.path = part_path(folder, rank)
        self.rank = rank
        self.failed = 0
        self.count = 0
        self._file: Any = None
        self.path.unlink(missing_ok=True)  # a part left by a killed run must not be merged into this one

    def add(self, job: Job, *, status: str, seconds: float = 0.0, error: str | None = None) -> None:
        entry = {"input": str(job.input), "output": str(job.output),
                 "sha256": file_sha256(job.output) if status != "failed" else None,
                 "seconds": round(seconds, 4), "rank": self.rank, "status": status, "error": error}
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - open across calls, closed in close()
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        self.count += 1
        self.failed += status == "failed"

    def close(self, *, remove: bool = False) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if remove:
            self.path.unlink(missing_ok=True)


def merge_manifest(folder: Path, jobs: Sequence[Job], world_size: int) -> list[dict]:
    """Rank 0, after the barrier: the parts of ranks 0..world_size-1 as one manifest in input order, written
    atomically; every part file (also a stale one of an earlier run with more ranks) is then removed."""
    from perceptsr.io.images import atomic_output

    entries: dict[str, dict] = {}
    for rank in range(world_size):
        part = part_path(folder, rank)
        if part.is_file():
            for line in part.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    entries[entry["output"]] = entry
    ordered = [entries[str(job.output)] for job in jobs if str(job.output) in entries]
    with atomic_output(folder / MANIFEST, overwrite=True) as temp:
        temp.write_text("".join(json.dumps(entry) + "\n" for entry in ordered), encoding="utf-8")
    for stale in folder.glob(".manifest.rank*.jsonl"):
        stale.unlink(missing_ok=True)
    return ordered


# A job that fails for one of these is the image's fault (unreadable, too large, unwritable): --continue-on-error
# records it and goes on. Anything else is a bug and ends the run.
BAD_IMAGE_ERRORS = (PerceptsrError, OSError, MemoryError)


def run_jobs(jobs: Sequence[Job], upscale: Callable[[list[Job], Callable[[Job], None]], None], recorder: Recorder,
             *, continue_on_error: bool = False) -> None:
    """Run `upscale(jobs, written)` over this rank's jobs and record each output in the manifest part.

    `upscale` processes its jobs in order, calls `written(job)` once each output is complete, and raises at the first
    failure after every earlier job was written (inference.upscale.run_in_order's contract), so the failed job is the
    one after the last written. With continue_on_error it is recorded with its one-line error and the rest run on;
    otherwise the error is raised. `seconds` is the wall time since the previous output of this rank.
    """
    remaining = list(jobs)
    while remaining:
        done = 0
        last = time.perf_counter()

        def written(job: Job) -> None:
            nonlocal done, last
            now = time.perf_counter()
            recorder.add(job, status="written", seconds=now - last)
            last = now
            done += 1

        try:
            upscale(remaining, written)
            return
        except BAD_IMAGE_ERRORS as error:
            if not continue_on_error or done >= len(remaining):
                raise
            recorder.add(remaining[done], status="failed", seconds=time.perf_counter() - last,
                         error=error_text(error))
            remaining = remaining[done + 1:]


def skip_existing(jobs: Sequence[Job], recorder: Recorder) -> list[Job]:
    """The jobs whose output does not exist yet; the others are recorded as skipped (an output is written
    atomically, so one that exists is complete)."""
    todo = []
    for job in jobs:
        if job.output.is_file():
            recorder.add(job, status="skipped")
        else:
            todo.append(job)
    return todo


def setup_ranks(device_kind: str) -> tuple[Dist, Any]:
    """Join torchrun's process group (nothing for one process) and make a gloo group for the barrier and gathers
    (CPU objects, long timeout). On CPU each rank gets its share of the cores."""
    env = distributed.setup(device_kind)
    if not env.enabled:
        return env, None
    import torch.distributed as dist

    if device_kind == "cpu":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size))
        torch.set_num_threads(max(1, cpu_count() // max(1, local_world)))
    return env, dist.new_group(backend="gloo", timeout=SYNC_TIMEOUT)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def barrier(env: Dist, group: Any) -> None:
    if env.enabled:
        import torch.distributed as dist

        dist.barrier(group=group)


def gather_to_main(env: Dist, group: Any, value: Any) -> list[Any] | None:
    """Every rank's `value` on rank 0, in rank order (None on the other ranks); [value] for one process."""
    if not env.enabled:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] | None = [None] * env.world_size if env.is_main else None
    dist.gather_object(value, gathered, dst=0, group=group)
    return gathered


def evaluate_shared(env: Dist, group: Any, model: Any, folder: Path, *, protocol: Any, metrics: Sequence[str],
                    run: Any, conditions: Any, max_images: int | None, max_pixels: int | None, model_name: str,
                    progress: bool) -> Any:
    """evaluation.evaluate.evaluate across ranks: each measures its share of the folder's images (split as upscale
    splits), rank 0 gathers the per-image rows and returns the EvalResult one process would (rows and means in
    image order, so the same sums in the same order); None on the other ranks."""
    from dataclasses import replace

    from perceptsr.evaluation.evaluate import dataset_samples, mean_rows, run_evaluation
    from perceptsr.io.images import list_images

    samples = dataset_samples(folder, protocol, max_images=max_images, max_pixels=max_pixels)
    mine = samples
    if env.enabled:
        paths = {path.stem: path for path in list_images([folder])}
        share = split([Job(paths[s.stem], paths[s.stem]) for s in samples], env.world_size)[env.rank]
        stems = {job.input.stem for job in share}
        mine = [sample for sample in samples if sample.stem in stems]
    result = run_evaluation(mine, protocol=protocol, metrics=metrics, model=model, run=run, conditions=conditions,
                            dataset=Path(folder).name, name=model_name, progress=progress and env.is_main)
    if not env.enabled:
        return result
    gathered = gather_to_main(env, group, result.images)
    if gathered is None:
        return None
    found = {stem: row for part in gathered for stem, row in part.items()}
    rows = {sample.stem: found[sample.stem] for sample in samples}
    keys = list(result.mean)
    return replace(result, images=rows, mean=mean_rows(rows.values(), keys),
                   undefined={m: [stem for stem, row in rows.items() if math.isnan(row[m])] for m in keys})


@dataclass(frozen=True)
class Summary:
    """What a finished run did, counted on rank 0 from the merged manifest (on other ranks: this rank's part)."""

    written: int
    skipped: int
    failed: int
    total: int


def finish(env: Dist, group: Any, folder: Path, jobs: Sequence[Job], recorder: Recorder) -> Summary:
    """Close this rank's part, wait for every rank, and on rank 0 merge the parts into `folder/manifest.jsonl`."""
    recorder.close()
    barrier(env, group)
    if not env.is_main:
        return Summary(written=0, skipped=0, failed=recorder.failed, total=recorder.count)
    entries = merge_manifest(folder, jobs, env.world_size)
    status = [entry["status"] for entry in entries]
    return Summary(written=status.count("written"), skipped=status.count("skipped"), failed=status.count("failed"),
                   total=len(jobs))
