"""The measured CPU speed of this machine, cached in ``HOMELLM_HOME/calibration.json``.

``homellm plan --measure`` writes it (:mod:`homellm.plan.calibrate`); detection reads it back when it
was measured on this CPU, and the speed estimates then say they use it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from homellm.hardware.types import CpuCalibration, CpuInfo

FILENAME = "calibration.json"


def calibration_path(home: Path) -> Path:
    return home / FILENAME


def load_calibration(home: Path, cpu: CpuInfo) -> CpuCalibration | None:
    """The cached calibration if it was measured on this CPU model; None otherwise."""
    try:
        data = json.loads(calibration_path(home).read_text(encoding="utf-8"))
        found = CpuCalibration(**data)
    except (FileNotFoundError, ValueError, TypeError):
        return None
    return found if found.cpu_model == cpu.model else None


def save_calibration(home: Path, calibration: CpuCalibration) -> Path:
    path = calibration_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{FILENAME}.tmp")
    tmp.write_text(json.dumps(asdict(calibration), indent=2), encoding="utf-8")
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        path.chmod(0o644)
    return path
