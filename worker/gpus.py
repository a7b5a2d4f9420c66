"""The GPUs a worker may give one run, from what it declares (nothing is probed)."""

from __future__ import annotations

import os


def gpu_count() -> int:
    """How many GPUs (ranks) this worker may give one run: the number PRORL_WORKER_GPUS starts with
    ("2 x H100" -> 2; on a CPU machine, "2" gives 2 CPU ranks), else the devices in
    CUDA_VISIBLE_DEVICES, else 1."""
    declared = os.environ.get("PRORL_WORKER_GPUS", "").strip()
    number = declared.split()[0] if declared else ""
    if number.isdigit():
        return max(int(number), 1)
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return max(len(visible), 1)
