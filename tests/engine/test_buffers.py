from __future__ import annotations

from pathlib import Path

import pytest

from homellm.engine.buffers import MIB, measure_buffers, parse_buffer_log
from homellm.errors import EngineError
from homellm.plan.memory import ContextParams

HERE = Path(__file__).parent


def test_parses_a_real_cpu_log() -> None:
    buffers = parse_buffer_log((HERE / "captured_smollm2_cpu.log").read_text())
    assert buffers.model == round(92.10 * MIB)
    assert buffers.kv == round(90.00 * MIB)
    assert buffers.output == round(0.19 * MIB)
    assert buffers.compute == round(98.25 * MIB)
    assert set(buffers.by_device) == {"CPU_Mapped", "CPU"}


def test_sliding_window_models_report_two_kv_caches_that_add_up() -> None:
    buffers = parse_buffer_log((HERE / "captured_gemma3_swa_cpu.log").read_text())
    assert buffers.kv == round(4.00 * MIB) + round(3.75 * MIB)


def test_a_reserved_again_compute_buffer_counts_once() -> None:
    log = (
        "sched_reserve:        CPU compute buffer size =    10.00 MiB\n"
        "sched_reserve:        CPU compute buffer size =    12.50 MiB\n"
    )
    assert parse_buffer_log(log).compute == round(12.5 * MIB)


@pytest.mark.engine
def test_measure_reports_a_clear_error_for_a_file_llama_cpp_rejects(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(EngineError, match=r"bogus\.gguf"):
        measure_buffers(bogus, ContextParams(ctx=256))
