"""Device selection, thread counts and peak-memory measurement."""

from __future__ import annotations

import logging
import os
import platform
import resource
import sys

import torch

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


MEMORY_LIMIT_ENV = "VOLINR_MEMORY_LIMIT_BYTES"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_headroom() -> int | None:
    """Limit minus usage of this process's memory cgroup (v2, else v1); None: no limit."""
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            with open(limit) as a, open(usage) as b:
                cap, used = a.read().strip(), int(b.read().strip())
        except (OSError, ValueError):
            continue
        if cap == "max" or int(cap) >= 1 << 60:  # unlimited
            return None
        return max(0, int(cap) - used)
    return None


def available_memory_bytes(device: torch.device) -> tuple[int | None, str]:
    """Memory a new allocation can take on ``device`` and where the number comes from.

    ``VOLINR_MEMORY_LIMIT_BYTES`` overrides it (a cap, or a test); CUDA: free device memory
    (torch.cuda.mem_get_info); CPU: /proc/meminfo MemAvailable (psutil or sysconf where
    there is none), lowered to the memory cgroup's headroom; None where nothing tells.
    """
    override = os.environ.get(MEMORY_LIMIT_ENV)
    if override:
        return int(float(override)), MEMORY_LIMIT_ENV
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), "torch.cuda.mem_get_info"
    found = _meminfo_available()
    headroom = _cgroup_headroom()
    if headroom is not None and (found is None or headroom < found):
        return headroom, "memory cgroup limit"
    return found, "MemAvailable"


def _status_bytes(field: str) -> int | None:
    """A memory field (VmRSS, VmHWM) of /proc/self/status in bytes; None where unavailable."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class MemoryMeter:
    """Peak memory of the training steps alone (evaluation passes excluded where possible).

    GPU: ``torch.cuda.max_memory_allocated`` over the training stretches (tensors only).
    CPU: the process's peak RSS (VmHWM, reset at the start) minus its RSS at the start: weights,
    activations, optimizer state and the allocator's slack; evaluation passes run in chunks no
    larger than a training batch so that they do not set the peak.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = 0
        self.start_rss = _status_bytes("VmRSS") or 0
        self.rss_reset = device.type != "cuda" and _reset_peak_rss()
        self.resume()

    def pause(self) -> None:
        """End a training stretch: fold its peak into the running maximum."""
        if self.device.type == "cuda":
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated(self.device))

    def resume(self) -> None:
        """Start a training stretch (after an evaluation pass)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> tuple[int, str]:
        self.pause()
        if self.device.type == "cuda":
            return int(self.peak_bytes), "cuda_max_memory_allocated"
        high = _status_bytes("VmHWM") if self.rss_reset else None
        if high is None:  # no /proc: the whole-process high-water mark, an upper bound
            high = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
                1 if sys.platform == "darwin" else 1024
            )
        return max(0, high - self.start_rss), "cpu_peak_rss_increase"
