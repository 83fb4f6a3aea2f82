"""Memory and cores: refuse a config that cannot fit before any worker starts, and size the pool.

A config that does not fit must be a one-line usage error naming it, never an OOM-killed worker
recorded as the backend's `crash`.  The estimate counts what one (config, backend) task holds at
its peak: the inputs and weights in their dtype, deploykit's float64 reference (its copies of X and
W, the GEMM's per-tap columns, the uncropped col2im buffer, the output and the magnitudes the
bound is built from) and the runtime's own column buffer and output.  It errs on the high side.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from deploykit.errors import UsageError
from deploykit.op.spec import ConvTransposeSpec
from deploykit.vocabulary import NUMPY_DTYPES

GIB = 1 << 30
MIB = 1 << 20
#: Resident memory of one worker with the default backends loaded (torch, onnxruntime, onnx);
#: measured at 289 MB with torch 2.13 and onnxruntime 1.31 on x86-64, rounded up.
WORKER_BASELINE_BYTES = 320 * MIB
#: Float64 arrays of the output's size alive at once while judging (reference, magnitudes, the
#: bound and its intermediates, the error and ratio arrays).
_JUDGE_ARRAYS = 10

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def config_bytes(spec: ConvTransposeSpec) -> int:
    """Peak bytes one (config, backend) task may need, deploykit's reference included."""
    item = NUMPY_DTYPES[spec.dtype].itemsize
    inputs = math.prod(spec.input_shape)
    weights = math.prod(spec.weight_shape) + (spec.out_channels if spec.bias else 0)
    output = spec.batch * spec.out_channels * math.prod(max(1, n) for n in spec.output_spatial)
    natural = spec.batch * spec.out_channels * math.prod(spec.natural_spatial)
    columns = spec.batch * spec.out_channels * math.prod(spec.kernel_shape) * math.prod(spec.in_spatial)
    reference = 8 * (2 * (inputs + weights) + columns + natural + _JUDGE_ARRAYS * output)
    runtime = item * (3 * (inputs + weights) + columns + 2 * output)
    return reference + runtime


def parse_size(text: str) -> int:
    """`512M`, `4G`, `1.5GiB` or a byte count -> bytes (powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"--max-memory {text!r} is not a size; give e.g. 512M, 4G or 1.5GiB")
    number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * 1024 ** "bkmgt".index(unit or "b"))
    if size < 1:
        raise UsageError(f"--max-memory {text!r} must be above 0")
    return size


def human(size: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{int(size)} B"


CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
#: cgroup v1 writes "no limit" as the largest page-aligned int64, not as "max"
_V1_UNLIMITED = 1 << 62


def _cgroup_dirs(controller: str, root: Path, proc: Path) -> list[Path]:
    """This process's cgroup folders for `controller`, own first, then each ancestor up to the root:
    a limit set on any of them applies.  cgroup v2 (one tree, `0::/path`) and v1 (a tree per
    controller, `N:cpu,cpuacct:/path`) both; a v1 controller found wins over the v2 tree."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controller in controllers.split(","):
            mounts = [(root / controllers, path)] + [(root / name, path) for name in controllers.split(",")]
            break
        if controllers == "":
            mounts.append((root, path))
    for base, path in mounts:
        if base.is_dir():
            own = base / path.strip("/")
            return [own, *[p for p in own.parents if p.is_relative_to(base)]]
    return []


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None  # "max" (v2) means no limit


def _memory_limit(root: Path = CGROUP_ROOT, proc: Path = PROC_CGROUP) -> tuple[int | None, int | None]:
    """(the tightest memory limit over this process's cgroup and its ancestors, its own usage)."""
    dirs = _cgroup_dirs("memory", root, proc)
    limits = [v for d in dirs for v in (_read_int(d / "memory.max"), _read_int(d / "memory.limit_in_bytes"))
              if v is not None and 0 < v < _V1_UNLIMITED]
    usage = [_read_int(dirs[0] / name) for name in ("memory.current", "memory.usage_in_bytes")] if dirs else []
    used = next((v for v in usage if v is not None), None)
    return (min(limits) if limits else None), used


def _cpu_quota(root: Path = CGROUP_ROOT, proc: Path = PROC_CGROUP) -> float | None:
    """The tightest CPU quota, in cores, over this process's cgroup and its ancestors (None: none)."""
    quotas = []
    for folder in _cgroup_dirs("cpu", root, proc):
        quota: str | int | None
        period: str | int | None
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]  # v2: "max 100000" or "150000 100000"
        except (OSError, ValueError):
            quota, period = _read_int(folder / "cpu.cfs_quota_us"), _read_int(folder / "cpu.cfs_period_us")  # v1
        if quota not in (None, "max", -1) and period and int(period) > 0 and int(quota) > 0:
            quotas.append(int(quota) / int(period))
    return min(quotas) if quotas else None


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def total_memory() -> int:
    """Physical memory, or the container's limit when that is lower."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = _meminfo("MemTotal") or 8 * GIB
    limit, _ = _memory_limit()
    return min(physical, limit) if limit else physical


def available_memory() -> int:
    """Memory a new process can use now: MemAvailable, capped by what the container has left."""
    available = _meminfo("MemAvailable") or total_memory() // 2
    limit, used = _memory_limit()
    if limit and used is not None:
        available = min(available, max(0, limit - used))
    return available


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, capped by a cgroup CPU quota)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def default_budget() -> int:
    """Per-config memory budget when --max-memory is not given: a quarter of memory, at most 4 GiB."""
    return min(4 * GIB, total_memory() // 4)


def check_budget(specs: list[ConvTransposeSpec], budget: int) -> int:
    """The largest estimate; a config over `budget` is a usage error naming it (before any work)."""
    largest = 0
    for spec in specs:
        need = config_bytes(spec)
        if need > budget:
            raise UsageError(
                f"config {spec.label} ({spec.id}, input {list(spec.input_shape)}, kernel {list(spec.kernel_shape)}) "
                f"needs about {human(need)}, over the {human(budget)} budget; shrink it or raise --max-memory"
            )
        largest = max(largest, need)
    return largest


def worker_count(requested: int, largest_config: int) -> tuple[int, str | None]:
    """Workers to start: at most one per usable core, and as many as fit in available memory.

    Returns the count and, when it is below `requested`, the one line that says why.
    """
    cores = usable_cores()
    per_worker = WORKER_BASELINE_BYTES + largest_config
    fit = max(1, available_memory() // per_worker)
    jobs = max(1, min(requested, cores, fit))
    if jobs == requested:
        return jobs, None
    return jobs, (
        f"--jobs {requested} reduced to {jobs}: {cores} usable core(s), {human(available_memory())} available"
        f" at about {human(per_worker)} per worker"
    )
