"""Measuring one inference setting: load time, first-call time, throughput, single-image latency, peak memory, AUC.

All candidates run in the tuning process, one after the other, each with a freshly loaded model.
Peak memory is the kernel's exact peak resident set size (``VmHWM``, reset before each candidate)
while the candidate loads and runs, minus the RSS just before it (after garbage collection and
returning freed heap to the OS): what the candidate's model and activations added. No sampling
thread (which would also compete for the cores being measured) and no missed short peaks. A
subprocess per candidate would isolate memory completely, but re-importing torch and transformers
costs seconds per candidate, more than the measurements themselves on the tiny model.
"""

from __future__ import annotations

import ctypes
import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from tasks.model.card import InferenceSettings


@dataclass(frozen=True)
class Measurement:
    load_s: float
    first_call_s: float
    throughput_ips: float
    p50_ms: float
    p95_ms: float
    peak_memory_mb: float | None
    val_roc_auc: float | None
    scores: np.ndarray


class PeakRss:
    """Peak RSS while the block runs, relative to the RSS when it started: Linux's exact high-water mark
    (``VmHWM``), reset at the start by writing 5 to ``/proc/self/clear_refs``. Elsewhere ``added_mb`` is None."""

    def __enter__(self) -> PeakRss:
        release_memory()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.start_kb = _status_kb("VmRSS")
        except OSError:
            self.start_kb = None
        self.peak_kb = None
        return self

    def __exit__(self, *exc) -> None:
        if self.start_kb is not None:
            self.peak_kb = _status_kb("VmHWM")

    @property
    def added_mb(self) -> float | None:
        return None if self.peak_kb is None else (self.peak_kb - self.start_kb) / 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc), so the next RSS baseline is honest."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the baseline is simply less tight
        pass


def measure(
    folder: Path,
    inference: InferenceSettings,
    images: Sequence[Image.Image],
    labels: np.ndarray,
    *,
    latency_requests: int,
    throughput_rounds: int,
) -> Measurement:
    """Load the detector in ``folder`` with ``inference`` and measure it on ``images``."""
    from sklearn.metrics import roc_auc_score

    from tasks.model.detector import Detector

    with PeakRss() as memory:
        start = time.perf_counter()
        detector = Detector.load(folder, inference)
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        scores = detector.score(images)  # the first call pays for lazy work (compilation, kernel selection)
        first_call_s = time.perf_counter() - start
        best = float("inf")
        for _ in range(throughput_rounds):
            start = time.perf_counter()
            detector.score(images)
            best = min(best, time.perf_counter() - start)
        latencies = []
        for i in range(latency_requests):
            start = time.perf_counter()
            detector.score([images[i % len(images)]])
            latencies.append(time.perf_counter() - start)
        del detector
    auc = float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else None
    return Measurement(
        load_s=load_s,
        first_call_s=first_call_s,
        throughput_ips=len(images) / best,
        p50_ms=float(np.percentile(latencies, 50) * 1000),
        p95_ms=float(np.percentile(latencies, 95) * 1000),
        peak_memory_mb=memory.added_mb,
        val_roc_auc=auc,
        scores=scores,
    )


def dtype_support(dtype: str, device: str) -> str | None:
    """Why ``dtype`` cannot run well on ``device`` (None: supported). CPUs need native bf16/fp16 kernels
    (oneDNN: AVX512-BF16/AMX, AVX512-FP16/AMX-FP16); otherwise the matmuls are emulated and only slower."""
    import torch

    if dtype in ("auto", "float32"):
        return None
    if device == "cuda":
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            return "this GPU has no bfloat16 support"
        return None
    check = {"bfloat16": "_is_mkldnn_bf16_supported", "float16": "_is_mkldnn_fp16_supported"}[dtype]
    try:
        supported = bool(getattr(torch.ops.mkldnn, check)())
    except (AttributeError, RuntimeError):
        supported = False
    if supported:
        return None
    return f"{dtype} on this CPU: no native kernels (oneDNN reports no support), emulation is only slower"
