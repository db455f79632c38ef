"""What homellm knows about a machine."""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 1024**3


@dataclass(frozen=True)
class GpuDevice:
    name: str
    vendor: str
    memory_bytes: int
    free_bytes: int | None = None
    bandwidth_gbs: float | None = None
    fp16_tflops: float | None = None
    unified: bool = False
    usable_fraction: float = 1.0
    catalog_name: str | None = None  # the catalog entry it was matched to, if any
    origin: str = "detected"  # detected | --gpu | --vram

    @property
    def usable_bytes(self) -> int:
        return int(self.memory_bytes * self.usable_fraction)


@dataclass(frozen=True)
class CpuInfo:
    model: str = "unknown CPU"
    cores: int = 1
    threads: int = 1
    flags: tuple[str, ...] = ()
    arch: str = ""


@dataclass(frozen=True)
class CpuCalibration:
    """This machine's CPU inference speed, measured by ``homellm plan --measure``.

    Decode time per token on the CPU = ``overhead_s_per_layer`` x layers + bytes read / ``bandwidth_gbs``;
    prefill = ``flops`` per second. ``method`` says how it was measured.
    """

    bandwidth_gbs: float  # memory read bandwidth, all cores (the probe)
    overhead_s_per_layer: float  # what llama.cpp spends per layer and token beyond reading memory
    flops: float | None  # effective prefill FLOP/s of llama.cpp (None: not measured)
    method: str  # "llama.cpp" (a real run) or "probe" (memory bandwidth only)
    decode_threads: int
    prefill_threads: int
    cpu_model: str
    measured_at: str
    reference: str = ""  # what llama.cpp ran: model, decode and prefill tokens/s


@dataclass(frozen=True)
class LinkSpeed:
    """A homellm link to another machine, as a short probe measured it."""

    rtt_s: float  # round trip of a small message through both ends of the link
    down_bytes_per_s: float  # worker -> this machine
    up_bytes_per_s: float  # this machine -> worker
    measured_at: str


@dataclass(frozen=True)
class RemoteDevice:
    """A device of another machine that llama.cpp reaches over RPC through a homellm link."""

    worker: str  # the paired worker's name
    name: str  # its llama.cpp device ("CPU", "CUDA0")
    description: str
    kind: str  # cpu | gpu
    offered_bytes: int  # what the worker lets this machine allocate (its --max-memory, at most its free memory)
    link: LinkSpeed
    gpu: GpuDevice | None = None  # the catalog GPU it matched, for the speed estimate
    cpu: CpuInfo | None = None
    cpu_calibration: CpuCalibration | None = None

    @property
    def label(self) -> str:
        return f"{self.name} on {self.worker}"

    @property
    def usable_bytes(self) -> int:
        """What the plan fills: the offer less the compute buffer's stated accuracy (2% or 8 MiB), since the
        worker refuses an allocation beyond its offer."""
        return self.offered_bytes - max(self.offered_bytes // 50, 8 * 1024 * 1024)


@dataclass(frozen=True)
class HardwareProfile:
    gpus: tuple[GpuDevice, ...]
    cpu: CpuInfo
    ram_bytes: int
    ram_available_bytes: int | None
    disk_free_bytes: int | None
    models_dir: str
    os: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    cpu_calibration: CpuCalibration | None = None
    remotes: tuple[RemoteDevice, ...] = ()  # other machines' devices (plan/fit/serve --with WORKER)

    @property
    def unified_memory(self) -> bool:
        return any(g.unified for g in self.gpus)
