"""What the benchmarks share: peak memory, device syncs, the device's name, and how one runs
another in a fresh process."""

from __future__ import annotations

import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import torch

from alol.atomic import write_json, write_text
from alol.train.precision import bf16_is_native, cpu_has_native_bf16

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: where `python -m bench.<name>` runs from."""


RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, result: dict, table: str, folder: Path = RESULTS) -> None:
    """<folder>/<name>.json and .md (bench/results by default), each written whole or not at
    all, and the table on stdout: what every benchmark leaves behind."""
    write_json(folder / f"{name}.json", result)
    write_text(folder / f"{name}.md", table)
    print(table)


def mean_and_sd(values: Iterable[float]) -> tuple[float, float | None]:
    """Mean and sample sd over seeds (or splits); sd is None for one value, since a single seed
    has no spread and 0 would read as seeds that agree."""
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def plus_minus(mean: float, sd: float | None, spec: str) -> str:
    """`mean ± sd` in `spec` (a sign is shown on the mean only), or the mean alone without sd."""
    if sd is None:
        return format(mean, spec)
    return f"{format(mean, spec)} ± {format(sd, spec.lstrip('+'))}"


def cpu_results_name(stem: str) -> str:
    """`<stem>_native` or `<stem>_emulated`, by whether this CPU has native bf16: a CPU
    benchmark keeps one result per kind of CPU, which differ several-fold."""
    return f"{stem}_{'native' if cpu_has_native_bf16() else 'emulated'}"


def commit() -> str:
    """The commit this script runs from (a worktree of a fixed commit, as long runs should)."""
    here = Path(__file__).resolve().parent
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True
    ).stdout.strip()


def run_module(module: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` in a fresh process from the repository root, its output
    captured (a worker that must not share memory with the benchmark that starts it)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, **kwargs
    )


class PeakMemory:
    """Peak memory over a stretch of work: on CUDA the most bytes allocated, on (Linux) CPU the
    process's resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs). For
    the CPU figure to follow the tensors alive, run with glibc's MALLOC_MMAP_THRESHOLD_ low
    (large frees then go back to the OS at once)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.baseline_mib = 0.0

    def reset(self) -> None:
        """Start a new stretch; what is held now becomes the baseline."""
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline_mib = torch.cuda.memory_allocated() / 2**20
            return
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current resident set
        self.baseline_mib = _proc_status_kib("VmRSS") / 1024

    def peak_mib(self) -> float:
        """The peak since `reset`, everything held included (model, optimizer state, ...)."""
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        return _proc_status_kib("VmHWM") / 1024

    def peak_above_baseline_mib(self) -> float:
        """The peak since `reset` minus what was held at `reset`: the work's own memory."""
        return self.peak_mib() - self.baseline_mib


def _proc_status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1))


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()  # kernels are asynchronous: time the work, not its launch


def training_precision(bf16: bool) -> str:
    """What a trainer whose config asks for `bf16` trains in on this machine
    (`alol.train.precision`): a table's runs from machines that differ here differ in it."""
    if not bf16:
        return "float32"
    return "bf16 autocast" if bf16_is_native() else "float32 (bf16 asked for, not native here)"


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
