"""Batch upscaling across processes (inference/batch.py, `upscale --recursive/--skip-existing/--continue-on-error`
and `torchrun -m perceptsr upscale|eval`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ENV, run_cli
from PIL import Image

from perceptsr.errors import InputError
from perceptsr.inference.batch import MANIFEST, Job, Recorder, list_jobs, run_jobs, split


def png(path: Path, height: int, width: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def collection(root: Path) -> Path:
    """Seven small images of different sizes in a tree two levels deep."""
    sizes = {"a.png": (12, 9), "b.png": (6, 6), "sub/c.png": (10, 14), "sub/d.jpg": (8, 5), "sub/deep/e.png": (7, 11),
             "sub/deep/f.png": (16, 4), "g.png": (5, 9)}
    for seed, (name, (h, w)) in enumerate(sizes.items()):
        png(root / name, h, w, seed)
    return root


def torchrun(*args: object, nproc: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), "-m", "perceptsr", *map(str, args)], env=ENV, capture_output=True, text=True,
                          timeout=300)


def manifest(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / MANIFEST).read_text().splitlines()]


def content(entries: list[dict], root: Path) -> list[tuple]:
    """A manifest less timings and ranks, paths relative to `root`."""
    return [(str(Path(e["input"]).relative_to(root)), str(Path(e["output"]).relative_to(root)), e["sha256"],
             e["status"], e["error"]) for e in entries]


def outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


# ---- the split and the listing ----

def test_split_is_deterministic_balanced_and_complete() -> None:
    sizes = {Path(f"im{i:02d}.png"): size for i, size in enumerate([900, 100, 400, 400, 50, 300, 300, 700, 20, 1])}
    jobs = [Job(path, Path("out") / path.name) for path in sizes]
    shares = split(jobs, 3, pixels=sizes.__getitem__)
    assert shares == split(list(jobs), 3, pixels=sizes.__getitem__)
    assert sorted(j.input for share in shares for j in share) == sorted(sizes)  # each job once
    for share in shares:
        assert share == sorted(share, key=jobs.index)  # input order kept within a share
    loads = [sum(sizes[j.input] for j in share) for share in shares]
    assert max(loads) - min(loads) <= max(sizes.values()) // 3, loads
    # largest first into the least-loaded rank: 900 | 700 | 400+400 ...
    assert shares[0][0].input == Path("im00.png") and Path("im07.png") in [j.input for j in shares[1]]
    assert [j.input.name for j in shares[2]] == ["im02.png", "im03.png", "im06.png"]
    # equal loads go to the lower rank: 1000 | 1000 after im01, so im04 (50) goes to rank 0
    assert [j.input.name for j in shares[0]] == ["im00.png", "im01.png", "im04.png"]


def test_split_reads_only_headers_and_one_rank_gets_everything(tmp_path: Path) -> None:
    a, b, c = png(tmp_path / "a.png", 40, 40), png(tmp_path / "b.png", 20, 20), png(tmp_path / "c.png", 30, 30)
    jobs = [Job(p, p) for p in (a, b, c)]
    assert split(jobs, 1) == [jobs]
    assert split(jobs, 2) == [[jobs[0]], [jobs[1], jobs[2]]]  # 1600 | 900 + 400


def test_recursive_listing_keeps_the_tree(tmp_path: Path) -> None:
    root = collection(tmp_path / "in")
    (root / ".hidden").mkdir()
    png(root / ".hidden" / "x.png", 4, 4)
    out = root / "out"  # an output folder inside the input is not read back
    png(out / "old.png", 4, 4)
    jobs = list_jobs([root], out, recursive=True)
    assert [str(j.input.relative_to(root)) for j in jobs] == ["a.png", "b.png", "g.png", "sub/c.png",
                                                              "sub/d.jpg", "sub/deep/e.png", "sub/deep/f.png"]
    assert [str(j.output.relative_to(out)) for j in jobs][4] == "sub/d.png"
    assert [j.input.name for j in list_jobs([root], out)] == ["a.png", "b.png", "g.png"]  # not recursive
    png(root / "sub" / "d.png", 4, 4)
    with pytest.raises(InputError, match="would both be written to"):
        list_jobs([root], out, recursive=True)


def test_run_jobs_records_a_failure_and_goes_on(tmp_path: Path) -> None:
    jobs = [Job(tmp_path / f"{i}.in", tmp_path / f"{i}.png") for i in range(4)]

    def upscale(todo: list[Job], written) -> None:  # fails on job 1, as run_in_order: earlier ones written first
        for job in todo:
            if job is jobs[1]:
                raise InputError(f"{job.input}: cannot identify\nimage")
            job.output.write_bytes(job.input.name.encode())
            written(job)

    recorder = Recorder(tmp_path, 0)
    with pytest.raises(InputError):
        run_jobs(jobs, upscale, recorder)
    recorder.close(remove=True)
    assert not (tmp_path / ".manifest.rank0.jsonl").exists()
    recorder = Recorder(tmp_path, 0)
    run_jobs(jobs, upscale, recorder, continue_on_error=True)
    recorder.close()
    lines = [json.loads(line) for line in recorder.path.read_text().splitlines()]
    assert [(Path(e["input"]).name, e["status"]) for e in lines] == [("0.in", "written"), ("1.in", "failed"),
                                                                      ("2.in", "written"), ("3.in", "written")]
    assert lines[1]["error"].endswith("cannot identify image") and lines[1]["sha256"] is None
    assert recorder.failed == 1


# ---- the command, one process and two ----

def test_two_processes_write_what_one_writes(tmp_path: Path) -> None:
    root = collection(tmp_path / "in")
    one = run_cli("upscale", root, "-o", tmp_path / "one", "--model", "bicubic", "--scale", "2", "--recursive",
                  "--quiet")
    assert one.returncode == 0, one.stderr
    two = torchrun("upscale", root, "-o", tmp_path / "two", "--model", "bicubic", "--scale", "2", "--recursive",
                   "--quiet")
    assert two.returncode == 0, two.stderr[-3000:]
    assert outputs(tmp_path / "one") == outputs(tmp_path / "two")
    assert len(outputs(tmp_path / "two")) == 7 and "sub/deep/e.png" in outputs(tmp_path / "two")
    single, double = manifest(tmp_path / "one"), manifest(tmp_path / "two")
    assert content([{**e, "output": e["output"].replace("/one/", "/two/")} for e in single], tmp_path) == \
        content(double, tmp_path)
    assert {e["rank"] for e in double} == {0, 1} and {e["rank"] for e in single} == {0}
    assert not list((tmp_path / "two").glob(".manifest.rank*"))


def test_a_killed_run_resumes_with_skip_existing(tmp_path: Path) -> None:
    root = collection(tmp_path / "in")
    out = tmp_path / "out"
    broken = root / "g.png"
    good = broken.read_bytes()
    broken.write_bytes(b"not an image")  # the first run dies on it (after a.png and b.png were written)
    first = run_cli("upscale", root, "-o", out, "--model", "bicubic", "--scale", "2", "--recursive", "--quiet")
    assert first.returncode == 2 and first.stderr.count("\n") == 1 and "g.png" in first.stderr
    done = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert {p.name for p in done} == {"a.png", "b.png"} and not (out / MANIFEST).exists()
    broken.write_bytes(good)
    refused = run_cli("upscale", root, "-o", out, "--model", "bicubic", "--scale", "2", "--recursive", "--quiet")
    assert refused.returncode == 2 and "already exists" in refused.stderr
    again = torchrun("upscale", root, "-o", out, "--model", "bicubic", "--scale", "2", "--recursive", "--quiet",
                     "--skip-existing")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in done} == done  # not written twice
    entries = manifest(out)
    assert len(entries) == 7 and all(Path(e["output"]).is_file() for e in entries)
    assert sorted(Path(e["input"]).name for e in entries if e["status"] == "skipped") == ["a.png", "b.png"]
    reference = run_cli("upscale", root, "-o", tmp_path / "ref", "--model", "bicubic", "--scale", "2",
                        "--recursive", "--quiet")
    assert reference.returncode == 0 and outputs(tmp_path / "ref") == outputs(out)


def test_continue_on_error_records_the_bad_image_and_finishes(tmp_path: Path) -> None:
    root = collection(tmp_path / "in")
    (root / "sub" / "c.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    run = torchrun("upscale", root, "-o", out, "--model", "bicubic", "--scale", "2", "--recursive", "--quiet",
                   "--continue-on-error")
    assert run.returncode != 0
    assert "1 of 7 image(s) failed" in run.stderr
    entries = manifest(out)
    failed = [e for e in entries if e["status"] == "failed"]
    assert [Path(e["input"]).name for e in failed] == ["c.png"] and "\n" not in failed[0]["error"]
    assert len(outputs(out)) == 6 and not (out / "sub" / "c.png").exists()


def eval_lines(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_eval_across_two_processes_equals_one(tmp_path: Path) -> None:
    data = tmp_path / "set"
    data.mkdir()
    for i, (h, w) in enumerate([(24, 20), (16, 28), (20, 20), (12, 16), (28, 12)]):
        base = np.random.default_rng(i).integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        Image.fromarray(base).resize((w, h), Image.BICUBIC).save(data / f"im{i}.png")
    args = ("eval", "--data", data, "--model", "bicubic", "--scale", "2", "--json", "--quiet")
    one = eval_lines(run_cli(*args))
    two = eval_lines(torchrun(*args))
    assert json.loads(one) == json.loads(two) and one == two
