"""llama.cpp's RPC backend, driven through the libraries llama-cpp-python ships.

Both halves of a split use the ggml RPC API of the very libraries the embedded engine loads
(``llama_cpp/lib/libggml-rpc``, built when ``GGML_RPC=ON``):

* the worker calls ``ggml_backend_rpc_start_server`` (in a child process: it never returns);
* the main machine calls ``ggml_backend_rpc_add_server`` and registers the devices it returns with
  ``ggml_backend_register`` before the model loads, so llama.cpp's default device list puts the remote
  device first, as ``llama-server --rpc`` does.

Why not llama.cpp's ``rpc-server`` program: llama-cpp-python does not build or install it, so it would be
a second CMake build of the same vendored source with its own flags, a binary to find on every OS, and a
second place for the two machines' builds to differ. The API is the same function ``rpc-server`` calls.

The functions must be called on the library instances llama-cpp-python already loaded: its wheel holds
copies (``libggml.so``, ``libggml.so.0``) and opening a different copy by path would load a second ggml
with a registry of its own, which llama.cpp never sees.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import sys
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from homellm.errors import EngineError
from homellm.i18n import _

PACKAGE = "llama-cpp-python"
REBUILD = (
    'CMAKE_ARGS="-DGGML_RPC=ON" pip install --force-reinstall --no-cache-dir --no-deps '
    '"llama-cpp-python[server]==0.3.36"'
)
_DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}


def _library_folder() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "lib"


def _library_file(folder: Path, stem: str) -> Path | None:
    names = {"win32": [f"{stem}.dll", f"lib{stem}.dll"], "darwin": [f"lib{stem}.dylib", f"lib{stem}.so"]}
    for name in names.get(sys.platform, [f"lib{stem}.so"]):
        if (folder / name).is_file():
            return folder / name
    return None


def has_rpc() -> bool:
    """Whether the installed llama-cpp-python was built with ``GGML_RPC=ON`` (checked without loading it)."""
    folder = _library_folder()
    return folder is not None and _library_file(folder, "ggml-rpc") is not None


def require_rpc() -> None:
    """One line saying how to rebuild, when the engine cannot split a model (pip reused a wheel without RPC)."""
    if _library_folder() is None:
        raise EngineError(
            _("the llama.cpp engine is not installed; install it with RPC: {command}").format(command=REBUILD)
        )
    if not has_rpc():
        raise EngineError(
            _("this llama-cpp-python was built without RPC (pip may have reused a cached wheel); rebuild it: "
              "{command}").format(command=REBUILD)
        )  # fmt: skip


@dataclass(frozen=True)
class BuildId:
    """Which llama.cpp a machine runs: two builds that differ must not talk RPC to each other."""

    package: str  # llama-cpp-python's version: it pins the vendored llama.cpp
    ggml: str
    commit: str  # the vendored llama.cpp commit, "unknown" when the build could not tell

    def __str__(self) -> str:
        commit = f", commit {self.commit}" if self.commit != "unknown" else ""
        return f"{PACKAGE} {self.package} (ggml {self.ggml}{commit})"

    def matches(self, other: BuildId) -> bool:
        known = "unknown" not in (self.commit, other.commit)
        return (self.package, self.ggml) == (other.package, other.ggml) and (not known or self.commit == other.commit)

    @classmethod
    def from_json(cls, data: Any) -> BuildId:
        if not isinstance(data, dict):
            raise ValueError(_("build must be an object"))
        fields = [data.get(k) for k in ("package", "ggml", "commit")]
        if not all(isinstance(f, str) and 0 < len(f) <= 64 for f in fields):
            raise ValueError(_("build fields must be short strings"))
        return cls(*fields)  # type: ignore[arg-type]


@cache
def loaded_library(stem: str) -> ctypes.CDLL:
    """The instance of ``lib<stem>`` that llama-cpp-python loaded (imports llama_cpp first)."""
    import llama_cpp  # noqa: F401 - loads libllama and, through it, the ggml libraries

    if sys.platform == "linux":
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip()
                if Path(path).name.startswith(f"lib{stem}.so"):
                    return ctypes.CDLL(path)
    folder = _library_folder()
    found = _library_file(folder, stem) if folder else None
    if found is None:
        raise EngineError(_("llama-cpp-python has no {lib} library; rebuild it: {command}").format(
            lib=stem, command=REBUILD))  # fmt: skip
    # macOS and Windows find an already-loaded library by its install name / file name
    return ctypes.CDLL(found.name if sys.platform == "win32" else str(found))


def _ggml() -> ctypes.CDLL:
    lib = loaded_library("ggml")
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    lib.ggml_backend_register.argtypes = [ctypes.c_void_p]
    return lib


def _base() -> ctypes.CDLL:
    lib = loaded_library("ggml-base")
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                            ctypes.POINTER(ctypes.c_size_t)]  # fmt: skip
    lib.ggml_backend_reg_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_reg_dev_count.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_reg_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_reg_dev_get.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.ggml_version.restype = ctypes.c_char_p
    lib.ggml_commit.restype = ctypes.c_char_p
    return lib


def _rpc() -> ctypes.CDLL:
    require_rpc()
    lib = loaded_library("ggml-rpc")
    lib.ggml_backend_rpc_add_server.restype = ctypes.c_void_p
    lib.ggml_backend_rpc_add_server.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_rpc_start_server.restype = None
    lib.ggml_backend_rpc_start_server.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                                                  ctypes.POINTER(ctypes.c_void_p)]  # fmt: skip
    return lib


def build_id() -> BuildId:
    """This machine's llama.cpp build (loads the engine's libraries)."""
    from importlib.metadata import version

    base = _base()
    commit = (base.ggml_commit() or b"unknown").decode(errors="replace").removesuffix("-dirty") or "unknown"
    return BuildId(version(PACKAGE), (base.ggml_version() or b"?").decode(errors="replace"), commit)


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    description: str
    kind: str  # cpu | gpu | igpu | accel
    free_bytes: int
    total_bytes: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _describe(dev: int) -> DeviceInfo:
    base = _base()
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    base.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
    return DeviceInfo(
        (base.ggml_backend_dev_name(dev) or b"?").decode(errors="replace"),
        (base.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
        _DEVICE_TYPES.get(base.ggml_backend_dev_type(dev), "?"),
        free.value,
        total.value,
    )


def serving_devices() -> list[tuple[int, DeviceInfo]]:
    """What an RPC server here offers, as ``rpc-server`` picks it: the accelerators, else the CPU."""
    ggml = _ggml()
    ggml.ggml_backend_load_all()
    found = []
    for i in range(ggml.ggml_backend_dev_count()):
        dev = ggml.ggml_backend_dev_get(i)
        info = _describe(dev)
        if info.kind in ("gpu", "igpu"):
            found.append((dev, info))
    if not found:
        cpu = ggml.ggml_backend_dev_by_type(0)
        if cpu:
            found.append((cpu, _describe(cpu)))
    return found


def start_server(endpoint: str, threads: int, devices: list[int]) -> None:
    """Serve RPC on ``endpoint`` with ``devices`` (never returns; run it in a process of its own)."""
    array = (ctypes.c_void_p * len(devices))(*devices)
    _rpc().ggml_backend_rpc_start_server(endpoint.encode(), None, threads, len(devices), array)


def add_server(endpoint: str) -> list[DeviceInfo]:
    """Make the RPC server at ``endpoint`` a device of this process's llama.cpp (before a model loads)."""
    reg = _rpc().ggml_backend_rpc_add_server(endpoint.encode())
    if not reg:
        raise EngineError(_("llama.cpp could not reach its RPC server at {endpoint}").format(endpoint=endpoint))
    _ggml().ggml_backend_register(reg)
    base = _base()
    return [_describe(base.ggml_backend_reg_dev_get(reg, i)) for i in range(base.ggml_backend_reg_dev_count(reg))]


def _serve_child(endpoint: str, threads: int) -> None:  # pragma: no cover - the worker's RPC process
    """Print this machine's build and devices as one JSON line, then serve (the parent reads the line)."""
    devices = serving_devices()
    if not devices:
        print(json.dumps({"error": "no devices"}), flush=True)
        sys.exit(1)
    facts = {"build": asdict(build_id()), "devices": [d.to_json() for _dev, d in devices]}
    print(json.dumps(facts), flush=True)
    start_server(endpoint, threads, [dev for dev, _info in devices])
    sys.exit(1)  # the server returned: it could not bind


if __name__ == "__main__":  # pragma: no cover - python -m homellm.engine.rpc ENDPOINT THREADS
    _serve_child(sys.argv[1], int(sys.argv[2]))
