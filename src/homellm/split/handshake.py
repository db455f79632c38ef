"""What a link says before any RPC byte: which llama.cpp each side runs, what the worker offers, the probe.

Frames are a 4-byte big-endian length and a payload; the greeting's payloads are JSON, bounded and
validated (the main machine is paired, but its bytes are still input). In order:

1. main -> worker ``{"v": 1, "mode": "rpc" | "probe", "build": {...}}``;
2. worker -> main ``{"ok": true, "worker": {...facts}}``, or ``{"ok": false, "reason": "build", "build": ...,
   "error": "..."}`` and the connection closes. A worker refuses a main machine whose llama.cpp build
   differs from its own, and the main machine refuses such a worker too: RPC between two builds is
   undefined (llama.cpp's own version check only compares the protocol's major number).
3. ``rpc``: from here the link carries llama.cpp's RPC; ``probe``: echoes and bulk transfers that measure the
   link (:func:`probe`), then the worker closes.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from homellm.engine.rpc import BuildId, DeviceInfo
from homellm.hardware.types import CpuCalibration, CpuInfo, LinkSpeed
from homellm.i18n import _
from homellm.pool.worker_link import HANDSHAKE_TIMEOUT, Answered, ByteFilter, Greeter, LinkRefused

VERSION = 1
MAX_JSON = 64 * 1024
MAX_PROBE_FRAME = 32 * 1024 * 1024
PROBE_BUDGET = 192 * 1024 * 1024  # bytes one probe session may move
PROBE_ECHOES = 15
PROBE_BURST = 256 * 1024  # about one token's logits (49,152 to 152,064 floats): what RPC moves per token
PROBE_BURSTS = 5


async def send_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(struct.pack(">I", len(payload)) + payload)
    await writer.drain()


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    size = struct.unpack(">I", await reader.readexactly(4))[0]
    if size > limit:
        raise LinkRefused(_("a {size}-byte link message (at most {limit})").format(size=size, limit=limit))
    return await reader.readexactly(size)


async def send_json(writer: asyncio.StreamWriter, data: dict[str, Any]) -> None:
    await send_frame(writer, json.dumps(data, separators=(",", ":")).encode())


async def read_json(reader: asyncio.StreamReader) -> dict[str, Any]:
    raw = await read_frame(reader, MAX_JSON)
    try:
        data = json.loads(raw)
    except ValueError:
        raise LinkRefused(_("a link message that is not JSON")) from None
    if not isinstance(data, dict):
        raise LinkRefused(_("a link message that is not a JSON object"))
    return data


def _number(data: dict[str, Any], key: str, low: float = 0, high: float = 1 << 62) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(_("{key} must be a number in [{low}, {high}]").format(key=key, low=low, high=high))
    return float(value)


def _text(data: dict[str, Any], key: str, limit: int = 200) -> str:
    value = data.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(_("{key} must be a string of at most {limit} characters").format(key=key, limit=limit))
    return value


@dataclass(frozen=True)
class OfferedDevice:
    """One device a worker serves over RPC, and the part of it the main machine may use."""

    device: DeviceInfo
    offered_bytes: int


@dataclass(frozen=True)
class WorkerFacts:
    """What a worker says about itself in its greeting (shown, stored and planned with on the main machine)."""

    name: str
    build: BuildId
    devices: tuple[OfferedDevice, ...]
    max_memory: int
    idle_timeout_s: float
    cpu: CpuInfo
    cpu_calibration: CpuCalibration | None
    threads: int

    @property
    def offered_bytes(self) -> int:
        return sum(d.offered_bytes for d in self.devices)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "build": asdict(self.build),
            "devices": [{**d.device.to_json(), "offered_bytes": d.offered_bytes} for d in self.devices],
            "max_memory": self.max_memory,
            "idle_timeout_s": self.idle_timeout_s,
            "cpu": {"model": self.cpu.model, "cores": self.cpu.cores, "threads": self.cpu.threads},
            "cpu_calibration": asdict(self.cpu_calibration) if self.cpu_calibration else None,
            "threads": self.threads,
        }

    @classmethod
    def from_json(cls, data: Any) -> WorkerFacts:
        """Validate a worker's greeting (ValueError when it is not one)."""
        if not isinstance(data, dict):
            raise ValueError(_("worker facts must be an object"))
        raw_devices = data.get("devices")
        if not isinstance(raw_devices, list) or not 1 <= len(raw_devices) <= 16:
            raise ValueError(_("devices must be a list of 1 to 16"))
        devices = []
        for d in raw_devices:
            if not isinstance(d, dict):
                raise ValueError(_("a device must be an object"))
            kind = _text(d, "kind", 8)
            if kind not in ("cpu", "gpu", "igpu", "accel"):
                raise ValueError(_("unknown device kind"))
            info = DeviceInfo(_text(d, "name", 64), _text(d, "description", 200), kind,
                              int(_number(d, "free_bytes")), int(_number(d, "total_bytes")))  # fmt: skip
            devices.append(OfferedDevice(info, int(_number(d, "offered_bytes"))))
        cpu = data.get("cpu")
        if not isinstance(cpu, dict):
            raise ValueError(_("cpu must be an object"))
        calibration = data.get("cpu_calibration")
        cal = None
        if calibration is not None:
            if not isinstance(calibration, dict) or set(calibration) != {f.name for f in fields(CpuCalibration)}:
                raise ValueError(_("cpu_calibration has the wrong fields"))
            cal = CpuCalibration(
                bandwidth_gbs=_number(calibration, "bandwidth_gbs", 0.01, 1e5),
                overhead_s_per_layer=_number(calibration, "overhead_s_per_layer", 0, 1),
                flops=_number(calibration, "flops", 1, 1e18) if calibration.get("flops") is not None else None,
                method=_text(calibration, "method", 20),
                decode_threads=int(_number(calibration, "decode_threads", 1, 4096)),
                prefill_threads=int(_number(calibration, "prefill_threads", 1, 4096)),
                cpu_model=_text(calibration, "cpu_model"),
                measured_at=_text(calibration, "measured_at", 40),
                reference=_text(calibration, "reference", 400),
            )
        return cls(
            name=_text(data, "name", 64),
            build=BuildId.from_json(data.get("build")),
            devices=tuple(devices),
            max_memory=int(_number(data, "max_memory")),
            idle_timeout_s=_number(data, "idle_timeout_s", 1, 86400),
            cpu=CpuInfo(
                _text(cpu, "model"), int(_number(cpu, "cores", 1, 4096)), int(_number(cpu, "threads", 1, 8192))
            ),
            cpu_calibration=cal,
            threads=int(_number(data, "threads", 1, 4096)),
        )


def worker_greeter(
    facts: WorkerFacts, rpc_filter: Callable[[], ByteFilter], busy: Callable[[], bool] = lambda: False
) -> Greeter:
    """The worker's side of the greeting: check the main machine's build, then RPC (filtered) or the probe.

    ``busy`` says whether an RPC session is under way: llama.cpp's RPC server serves one at a time, so a
    second one is refused with a reason rather than left waiting.
    """

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> ByteFilter:
        hello = await read_json(reader)
        try:
            if hello.get("v") != VERSION or hello.get("mode") not in ("rpc", "probe"):
                raise ValueError(_("unknown version or mode"))
            theirs = BuildId.from_json(hello.get("build"))
        except ValueError as exc:
            raise LinkRefused(_("a greeting homellm does not understand ({error})").format(error=exc)) from None
        if not theirs.matches(facts.build):
            error = _("the worker runs {ours}, the main machine {theirs}").format(ours=facts.build, theirs=theirs)
            await send_json(writer, {"ok": False, "reason": "build", "build": asdict(facts.build), "error": error})
            raise LinkRefused(error)
        if hello["mode"] == "rpc" and busy():
            error = _("the worker already lends its device to a session")
            await send_json(writer, {"ok": False, "reason": "busy", "build": asdict(facts.build), "error": error})
            raise LinkRefused(error)
        await send_json(writer, {"ok": True, "worker": facts.to_json()})
        if hello["mode"] == "probe":
            await serve_probe(reader, writer)
            raise Answered
        return rpc_filter()

    return greet


async def greet_worker(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, build: BuildId, mode: str, what: str
) -> WorkerFacts:
    """The main machine's side: send our build, read the worker's facts (or why it refused)."""
    import ssl

    try:
        # TLS 1.3: a worker that refuses this machine's certificate says so after the handshake, so the refusal
        # shows up here, as a reset or the end of the stream
        await send_json(writer, {"v": VERSION, "mode": mode, "build": asdict(build)})
        reply = await asyncio.wait_for(read_json(reader), HANDSHAKE_TIMEOUT)
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        raise LinkRefused(
            _("{what} closed the link at once: it does not admit this machine (is it paired with this gateway? "
              "pair it again with `homellm join`)").format(what=what)
        ) from None  # fmt: skip
    except TimeoutError:
        raise LinkRefused(_("{what} did not answer the link's greeting").format(what=what)) from None
    if reply.get("ok") is not True and reply.get("reason") == "busy":
        raise LinkRefused(_("{what} is lending its device to another session now").format(what=what))
    if reply.get("ok") is not True:
        try:
            theirs: str = str(BuildId.from_json(reply.get("build")))
        except ValueError:
            theirs = "?"
        raise LinkRefused(
            _("{what} refused this machine: it runs {theirs} and this machine runs {ours}; install the same homellm "
              "and llama-cpp-python on both").format(what=what, theirs=theirs, ours=build)
        )  # fmt: skip
    try:
        facts = WorkerFacts.from_json(reply.get("worker"))
    except ValueError as exc:
        raise LinkRefused(_("{what} sent a greeting homellm does not understand ({error})").format(
            what=what, error=exc)) from None  # fmt: skip
    if not facts.build.matches(build):
        raise LinkRefused(
            _("{what} runs {theirs} and this machine runs {ours}; install the same homellm and llama-cpp-python on "
              "both").format(what=what, theirs=facts.build, ours=build)
        )  # fmt: skip
    return facts


async def serve_probe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The worker's side of the probe: ``E`` echo, ``D`` + u32 send that many bytes, ``U`` + data ack, ``Q`` end."""
    moved = 0
    while moved <= PROBE_BUDGET:
        frame = await read_frame(reader, MAX_PROBE_FRAME + 1)
        moved += len(frame)
        op = frame[:1]
        if op == b"E" and len(frame) <= 64:
            await send_frame(writer, frame)
        elif op == b"D" and len(frame) == 5:
            size = struct.unpack(">I", frame[1:])[0]
            if size > MAX_PROBE_FRAME:
                raise LinkRefused(_("a probe asked for {size} bytes").format(size=size))
            moved += size
            await send_frame(writer, bytes(size))
        elif op == b"U":
            await send_frame(writer, b"K")
        else:
            return


async def probe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> LinkSpeed:
    """Measure the link: the median of small round trips, then of 256 KiB bursts each way (well under a second)."""
    rtts = []
    for i in range(PROBE_ECHOES + 1):
        start = time.perf_counter()
        await send_frame(writer, b"E" + struct.pack(">Q", i))
        await read_frame(reader, 64)
        if i:  # the first one warms the path up
            rtts.append(time.perf_counter() - start)
    rtt = statistics.median(rtts)

    async def timed(size: int, down: bool) -> float:
        start = time.perf_counter()
        if down:
            await send_frame(writer, b"D" + struct.pack(">I", size))
            await read_frame(reader, MAX_PROBE_FRAME)
        else:
            await send_frame(writer, b"U" + bytes(size - 1))
            await read_frame(reader, 64)
        return time.perf_counter() - start

    # bursts the size of what a token moves, after a pause like a token's compute: their rate, not a bulk
    # transfer's, is what a token pays (each burst starts with an empty pipe)
    speeds = []
    for down in (True, False):
        took = []
        for _burst in range(PROBE_BURSTS):
            took.append(await timed(PROBE_BURST, down))
            await asyncio.sleep(0.01)
        speeds.append(PROBE_BURST / max(statistics.median(took) - rtt, 1e-6))
    await send_frame(writer, b"Q")
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return LinkSpeed(rtt, speeds[0], speeds[1], now)
