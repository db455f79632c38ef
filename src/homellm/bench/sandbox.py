"""Run untrusted generated code (HumanEval) in a separate, restricted Python process.

The program never runs in homellm's process. The child gets: its own empty folder as the
working directory and HOME; an audit hook that refuses writing, deleting or renaming outside
that folder, starting processes, opening sockets and loading native code via ctypes; limits
on memory, CPU time and file size (POSIX); and a wall-clock timeout after which its whole
process group is killed. This is defence in depth for benchmark code, not a jail for malware.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

GUARD = r"""
import os, sys
ROOT = os.path.realpath(sys.argv[1])
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATH_EVENTS = {"os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
               "os.symlink", "os.link", "shutil.rmtree", "shutil.move", "shutil.copyfile", "os.utime"}
BLOCKED = {"subprocess.Popen": "starting processes", "os.system": "starting processes", "os.exec": "starting processes",
           "os.posix_spawn": "starting processes", "os.spawn": "starting processes", "os.fork": "starting processes",
           "os.forkpty": "starting processes", "pty.spawn": "starting processes", "os.kill": "signalling processes",
           "socket.connect": "network access", "socket.bind": "network access", "socket.sendto": "network access",
           "socket.getaddrinfo": "network access", "ctypes.dlopen": "native code", "ctypes.dlsym": "native code"}

def inside(path):
    try:
        p = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return p == ROOT or p.startswith(ROOT + os.sep)

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
        if writing and isinstance(path, (str, bytes, os.PathLike)) and not inside(path):
            raise PermissionError(f"sandbox: writing outside its folder is not allowed: {path}")
    elif event in PATH_EVENTS:
        for a in args:
            if isinstance(a, (str, bytes, os.PathLike)) and not inside(a):
                raise PermissionError(f"sandbox: changing files outside its folder is not allowed: {a}")
    elif event in BLOCKED:
        raise PermissionError(f"sandbox: {BLOCKED[event]} is not allowed")

sys.addaudithook(hook)
with open(sys.argv[2]) as fh:
    source = fh.read()
exec(compile(source, "program.py", "exec"), {"__name__": "__main__"})
"""


@dataclass
class SandboxResult:
    status: str  # passed | failed | timeout | refused
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _limits(memory_mb: int, cpu_s: int) -> None:  # pragma: no cover - runs in the child
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_program(source: str, timeout: float = 10.0, memory_mb: int = 1024) -> SandboxResult:
    with tempfile.TemporaryDirectory(prefix="homellm-sandbox-") as tmp:
        folder = Path(tmp)
        (folder / "guard.py").write_text(GUARD)
        (folder / "program.py").write_text(source)
        posix = os.name == "posix"
        cpu = int(timeout) + 1
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(folder / "guard.py"), str(folder), str(folder / "program.py")],
            cwd=folder,
            env={"HOME": str(folder), "PATH": "", "PYTHONDONTWRITEBYTECODE": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=posix,
            preexec_fn=(lambda: _limits(memory_mb, cpu)) if posix else None,
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            if posix:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.communicate()
            return SandboxResult("timeout", f"ran longer than {timeout:g}s")
        text = err.decode(errors="replace").strip()
        if proc.returncode == 0:
            return SandboxResult("passed")
        last = text.splitlines()[-1] if text else f"exit code {proc.returncode}"
        if "sandbox:" in text:
            return SandboxResult("refused", last)
        if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL) if posix else False:
            return SandboxResult("timeout", "CPU time limit")
        return SandboxResult("failed", last[:300])
