"""The device a run uses and the networks resident on it: built once per process and kept, so a
daemon loads VGG-19 once, not once per photo."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from daemon.engine.settings import StyleSettings
from daemon.engine.transfer import layers_needed
from daemon.engine.vgg import VGGFeatures, load_vgg
from daemon.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; asking for an absent CUDA device is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} asked for, but no CUDA device is available")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 in hardware; emulated, bf16 is no faster than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu, private
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve_precision(name: str, device: torch.device) -> tuple[str, str]:
    """The network's arithmetic for `name` ('auto' or one of settings.PRECISIONS) on `device`,
    and why, for the log: 'auto' is bf16 on a CPU with bf16 units, fp32 elsewhere."""
    if name != "auto":
        return name, "as asked"
    if device.type == "cuda":
        return "fp32", "the GPU default until bench/gpu_check.sh has priced bf16 (DECISIONS.md)"
    if native_bf16(device):
        return "bf16", "this CPU has bf16 units (AMX or AVX512-BF16); fp32 to finish"
    return "fp32", "this CPU has no bf16 units (neither AMX nor AVX512-BF16)"


MEMORY_SHARE = 0.8  # of the free memory, what one run may plan to use


@dataclass
class Models:
    """The VGG networks in use on one device, built once: one process, one resident model;
    `precision` ('auto' or settings.PRECISIONS) is resolved for the device at once."""

    device: torch.device
    precision: str = "auto"
    precision_reason: str = field(init=False)
    _by_key: dict[tuple, VGGFeatures] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.precision, self.precision_reason = resolve_precision(self.precision, self.device)

    def memory_budget_bytes(self) -> int:
        """What one run may use: MEMORY_SHARE of the free device memory plus what torch already
        holds, or on the CPU of the memory the system has available. Not all of it: the
        estimate (engine.memory) is per pixel and the allocator rounds, and the rest of the
        machine must keep running (DECISIONS.md, coarse to fine: a 4096 px run given all of
        it)."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            held = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(
                self.device
            )
            return int((free + held) * MEMORY_SHARE)
        return int(_available_ram_bytes() * MEMORY_SHARE)

    def for_settings(self, settings: StyleSettings) -> VGGFeatures:
        """The network for these settings' weights, pooling and layers (built on first use)."""
        layers = tuple(sorted(set(layers_needed(settings))))
        key = (settings.weights, settings.pooling, layers)
        if key not in self._by_key:
            self._by_key[key] = load_vgg(
                settings.weights, layers, pooling=settings.pooling, device=self.device
            )
        return self._by_key[key]


def _available_ram_bytes() -> int:
    """MemAvailable (free plus reclaimable cache); free pages alone undercount a busy host."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


TORCH_VERSION: str = torch.__version__  # for the sidecar: which torch made a result


def is_poisoned(exc: BaseException) -> bool:
    """CUDA's sticky errors (illegal address, launch failure, ECC): only a new process recovers."""
    text = str(exc)
    accelerator_error = getattr(torch, "AcceleratorError", ())
    cuda_error = isinstance(exc, accelerator_error) or (
        isinstance(exc, RuntimeError) and "CUDA error" in text
    )
    return cuda_error and not is_out_of_memory(exc)


def is_out_of_memory(exc: BaseException) -> bool:
    """The device ran out of memory this time: worth another attempt once it is freed. cuBLAS,
    cuDNN and kernel launches report it as a plain CUDA error (an AcceleratorError in torch 2.8
    and later) rather than as torch.OutOfMemoryError."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "CUDA error: out of memory" in str(exc)


def release_cached_memory() -> None:
    """Hand the caching allocator's free blocks back to the device (a no-op without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
