"""``plan --measure``: this machine's CPU speed, measured and used by the estimates.

The target (issue 12): decode and prefill estimates for SmolLM2 on this machine within 20% of what the real
llama.cpp measures. On a shared machine the load changes from one minute to the next, so llama.cpp is timed
once, ten runs after a warm-up: the odd runs calibrate, the even runs are the measurement the estimate must
match (medians of five each). Both halves see the same load; the calibration still goes through the bandwidth
probe, the byte accounting of ``fit`` and the speed model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from homellm.catalog import Catalog
from homellm.engine.speed_probe import measure_engine_speed
from homellm.hardware.calibration import load_calibration
from homellm.hardware.cpu import detect_cpu
from homellm.hardware.detect import detect_hardware
from homellm.plan import calibrate as calibration
from homellm.plan.fit import fit_model, from_gguf
from homellm.plan.gguf_file import read_gguf
from homellm.plan.memory import ContextParams

pytestmark = pytest.mark.engine


def _estimate(smollm2: Path, home: Path, catalog: Catalog) -> tuple[float, float, list[str]]:
    hw = replace(detect_hardware(home / "models", catalog, home), gpus=())  # the CPU, as the engine runs here
    fit = fit_model(from_gguf(read_gguf(smollm2)), ContextParams(ctx=512), hw, catalog)
    assert fit.decode_tokens_per_s and fit.prefill_tokens_per_s
    return fit.decode_tokens_per_s, fit.prefill_tokens_per_s, fit.speed_notes


def test_estimates_match_llama_cpp_on_this_machine(smollm2: Path, tmp_path: Path, catalog: Catalog) -> None:
    home = tmp_path / "home"
    timed = measure_engine_speed(smollm2, runs=10)
    calibrating, actual = timed.subset(slice(0, None, 2)), timed.subset(slice(1, None, 2))
    measured_cal = calibration.calibrate(home, home / "models", detect_cpu(), catalog, calibrating)
    assert measured_cal.method == "llama.cpp" and measured_cal.flops and measured_cal.bandwidth_gbs > 0
    decode, prefill, notes = _estimate(smollm2, home, catalog)
    assert any("calibrated on this machine" in n for n in notes)
    assert abs(decode / actual.decode_tokens_per_s - 1) <= 0.20, (decode, actual)
    assert abs(prefill / actual.prefill_tokens_per_s - 1) <= 0.20, (prefill, actual)


def test_without_the_engine_a_bandwidth_probe_calibrates(
    smollm2: Path, tmp_path: Path, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calibration, "engine_installed", lambda: False)
    home = tmp_path / "home"
    result = calibration.calibrate(home, home / "models", detect_cpu(), catalog)
    assert result.method == "probe" and result.flops is None and result.bandwidth_gbs > 0
    _decode, _prefill, notes = _estimate(smollm2, home, catalog)
    assert any("measured memory bandwidth" in n for n in notes)
    other_cpu = replace(detect_cpu(), model="some other CPU")
    assert load_calibration(home, other_cpu) is None  # a calibration belongs to the CPU it was measured on
