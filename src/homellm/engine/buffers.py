"""Ask the real llama.cpp what it allocates for a GGUF file.

llama.cpp reports each buffer it allocates in its log ("CPU KV buffer size =
90.00 MiB"). This module loads a model in a child process (llama.cpp aborts the
whole process on some malformed files, so it never runs in ours), captures that
log through ``llama_log_set`` and parses it into :class:`MeasuredBuffers`.

The advisor's accuracy tests and ``benchmarks/fit_accuracy.py`` compare
``homellm fit`` against these numbers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from homellm.errors import EngineError
from homellm.i18n import _
from homellm.plan.memory import ContextParams  # llama-server's context settings, the ones measured

MIB = 1024 * 1024

# "load_tensors:   CPU_Mapped model buffer size =    92.10 MiB"
# "llama_kv_cache:        CPU KV buffer size =    90.00 MiB"
# "llama_context:        CPU  output buffer size =     0.19 MiB"
# "sched_reserve:        CPU compute buffer size =    99.38 MiB"
_BUFFER_LINE = re.compile(
    r"^\S+:\s+(?P<device>\S+)\s+(?P<kind>model|KV|output|compute)\s+buffer size\s*=\s*"
    r"(?P<mib>[0-9.]+)\s+MiB",
)
_KIND = {"model": "model", "KV": "kv", "output": "output", "compute": "compute"}


@dataclass
class MeasuredBuffers:
    """Bytes per buffer kind, summed over devices, as llama.cpp printed them (0.01 MiB resolution)."""

    model: int = 0
    kv: int = 0
    output: int = 0
    compute: int = 0
    by_device: dict[str, dict[str, int]] = field(default_factory=dict)


def parse_buffer_log(text: str) -> MeasuredBuffers:
    """Parse llama.cpp's log into buffer sizes.

    Model and KV lines add up (an SWA model has two KV caches, each with its own
    line); compute and output buffers are re-reserved, so the last report wins.
    """
    sizes: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        match = _BUFFER_LINE.match(line.strip())
        if match:
            kind = _KIND[match["kind"]]
            key = (kind, match["device"])
            size = round(float(match["mib"]) * MIB)
            sizes[key] = sizes.get(key, 0) + size if kind in ("model", "kv") else size
    result = MeasuredBuffers()
    for (kind, device), size in sizes.items():
        setattr(result, kind, getattr(result, kind) + size)
        result.by_device.setdefault(device, {})[kind] = size
    return result


_KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}


def _child(model_path: str, settings: ContextParams) -> None:  # pragma: no cover - runs in the child
    import ctypes

    import llama_cpp

    chunks: list[str] = []

    @ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)  # type: ignore[untyped-decorator]
    def on_log(level: int, text: bytes, user_data: object) -> None:
        chunks.append(text.decode(errors="replace"))

    llama_cpp.llama_log_set(on_log, None)
    llama_cpp.llama_backend_init()
    model_params = llama_cpp.llama_model_default_params()
    model_params.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(model_path.encode(), model_params)
    if not model:
        print(json.dumps({"error": "llama.cpp could not load the model", "log": "".join(chunks)[-2000:]}))
        return
    ctx_params = llama_cpp.llama_context_default_params()
    ctx_params.n_ctx = settings.ctx
    ctx_params.n_batch = settings.batch
    ctx_params.n_ubatch = settings.ubatch
    ctx_params.n_seq_max = settings.parallel
    ctx_params.flash_attn_type = (
        llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if settings.flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    )
    ctx_params.type_k = _KV_TYPES[settings.kv_type]
    ctx_params.type_v = _KV_TYPES[settings.kv_type]
    ctx_params.swa_full = settings.swa_full
    ctx_params.kv_unified = settings.kv_unified
    if settings.yarn_orig_ctx:
        ctx_params.rope_scaling_type = llama_cpp.LLAMA_ROPE_SCALING_TYPE_YARN
        ctx_params.yarn_orig_ctx = settings.yarn_orig_ctx
        ctx_params.rope_freq_scale = settings.yarn_orig_ctx / settings.ctx
    ctx = llama_cpp.llama_init_from_model(model, ctx_params)
    if not ctx:
        print(json.dumps({"error": "llama.cpp could not create a context", "log": "".join(chunks)[-2000:]}))
        return
    print(json.dumps({"log": "".join(chunks)}))


def measure_buffers(model_path: Path, settings: ContextParams, timeout: float = 300.0) -> MeasuredBuffers:
    """Load ``model_path`` on the CPU with llama.cpp and return what it allocated."""
    args = json.dumps({"model": str(model_path), "settings": asdict(settings)})
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "homellm.engine.buffers", args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise EngineError(
            _("llama.cpp took longer than {timeout:.0f}s to load {name}").format(timeout=timeout, name=model_path.name)
        ) from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EngineError(
            _("llama.cpp failed on {name} (exit {returncode}): {last_line}").format(
                name=model_path.name, returncode=proc.returncode, last_line=tail[0]
            )
        )
    reply = json.loads(lines[-1])
    if "error" in reply:
        raise EngineError(f"{reply['error']} ({model_path.name})")
    return parse_buffer_log(reply["log"])


if __name__ == "__main__":  # pragma: no cover - the child entry point
    request = json.loads(sys.argv[1])
    _child(request["model"], ContextParams(**request["settings"]))
