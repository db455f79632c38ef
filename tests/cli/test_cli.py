"""The ``homellm`` command as a user runs it: a real process, its stdout, stderr and exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIT_KEYS = {
    "model", "quant", "ctx", "weights_bytes", "kv_cache_bytes", "compute_bytes", "output_bytes", "overhead_bytes",
    "total_bytes", "n_layers", "gpu_layers", "devices", "fits", "decode_tokens_per_s", "prefill_tokens_per_s",
}  # fmt: skip


def homellm(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if home is not None:
        env["HOMELLM_HOME"] = str(home)
    env.pop("HOMELLM_DEBUG", None)
    env["COLUMNS"] = "200"
    exe = Path(sys.executable).with_name("homellm")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=120, check=False)


def test_help_lists_the_advisor_commands() -> None:
    r = homellm("--help")
    assert r.returncode == 0
    for command in ("models", "gpus", "fit", "plan", "buy"):
        assert command in r.stdout


def test_fit_json_contract(tmp_path: Path) -> None:
    r = homellm("fit", "qwen2.5:14b", "--gpu", "RTX 5070 Ti", "--ram", "32", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data) >= FIT_KEYS
    for key in FIT_KEYS:
        if key.endswith("_bytes"):
            assert isinstance(data[key], int) and data[key] >= 0, key
    assert data["total_bytes"] == sum(data[k] for k in FIT_KEYS if k.endswith("_bytes") and k != "total_bytes")
    names = [d["name"] for d in data["devices"]]
    assert names == ["RTX 5070 Ti", "CPU (RAM)"]
    assert all(set(d) == {"name", "kind", "layers", "output", "used_bytes", "capacity_bytes"} for d in data["devices"])
    assert [(d["kind"], d["output"]) for d in data["devices"]] == [("gpu", True), ("cpu", False)]
    assert sum(d["layers"] for d in data["devices"]) == data["n_layers"]
    assert data["fits"] is True and data["gpu_layers"] == data["n_layers"] + 1


def test_fit_a_real_gguf_file(smollm2: Path, tmp_path: Path) -> None:
    r = homellm("fit", str(smollm2), "--ctx", "2048", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["weights_bytes"] == 96576768  # the file's tensor table, to the byte
    assert data["kv_cache_bytes"] == 30 * 2 * 192 * 2048 * 2


def test_fit_human_output_prints_the_commands(tmp_path: Path) -> None:
    r = homellm("fit", "llama3.1:8b", "--gpu", "RTX 3060 12GB", "--ctx", "8192", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ollama pull llama3.1:8b" in r.stdout
    assert "OLLAMA_CONTEXT_LENGTH=8192" in r.stdout
    assert "llama-server -m" in r.stdout and "-ngl 33" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "qwen2.5:13b"], "unknown model 'qwen2.5:13b'; did you mean 'qwen2.5:14b'"),
        (["fit", "qwen2.5:14b", "--quant", "Q4_K"], "unknown quantization 'Q4_K'; did you mean 'Q4_K_M'"),
        (["fit", "qwen2.5:14b", "--gpu", "RTX 5071"], "unknown GPU 'RTX 5071'; did you mean 'RTX 5070'"),
        (["fit", "/nonexistent/model.gguf"], "no such file: /nonexistent/model.gguf"),
        (["fit", "qwen2.5:14b", "--kv-type", "q8_0", "--no-flash-attn"], "needs flash attention"),
        (["fit", "qwen2.5:14b", "--ctx", "0"], "must be positive"),
        (["plan", "--use-case", "poetry"], "unknown use case 'poetry'"),
        (["buy", "qwen2.5:32b", "--budget", "lots"], "cannot read the budget 'lots'"),
        (["buy", "qwen2.5:32b", "--budget", "300000"], "say which currency"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str, tmp_path: Path) -> None:
    r = homellm(*args, home=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_corrupt_and_foreign_gguf_files(tmp_path: Path, smollm2: Path) -> None:
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("hello")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(smollm2.read_bytes()[:4096])
    for path, message in ((not_gguf, "is not a GGUF file"), (truncated, "corrupt or truncated")):
        r = homellm("fit", str(path), home=tmp_path)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_plan_json_on_a_given_gpu_checks_the_guide(tmp_path: Path) -> None:
    r = homellm("plan", "--gpu", "RTX 5090", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data["recommendations"]) == {"chat", "code", "math", "japanese"}
    best = data["recommendations"]["chat"]["best"]
    assert best["total_bytes"] < 32 * 1024**3 and best["why"]
    assert any("(BF16)" in why for why in best["why"]) and any(
        "KL divergence" in w or "no loss" in w for w in best["why"]
    )
    japanese = data["recommendations"]["japanese"]["best"]["model"]
    assert not japanese.startswith(("smollm2", "llama3.2:1b"))
    section = {c["ja"]: c for c in data["guide_checks"] if c["section"] == "RTX 5090（32GB VRAM）推奨構成"}
    assert section["Llama 3.3 70B（FP16）"]["verdict"] == "wrong" and section["Llama 3.3 70B（FP16）"]["correction"]
    assert all("RTX 5090" in c["gpus"] for c in data["guide_checks"])


@pytest.mark.parametrize("gpu", ["RTX 5070", "RTX 5070 Ti", "RTX 5080", "RTX 5090"])
def test_plan_shows_that_gpus_section_of_the_guide(gpu: str, tmp_path: Path) -> None:
    r = homellm("plan", "--gpu", gpu, "--use-case", "chat", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"What the guide claims about {gpu}, recomputed" in r.stdout
    heading = {"RTX 5070": "RTX 5070（12GB VRAM）推奨構成", "RTX 5090": "RTX 5090（32GB VRAM）推奨構成"}.get(
        gpu, "RTX 5070 Ti / RTX 5080（16GB VRAM）推奨構成"
    )
    assert heading in r.stdout and "fix:" in r.stdout


def test_plan_with_only_vram_or_ram_recommends_something(tmp_path: Path) -> None:
    for args in (["--vram", "8"], ["--vram", "24"], ["--ram", "16"]):
        r = homellm("plan", *args, "--use-case", "chat", "--json", home=tmp_path)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["recommendations"]["chat"]["best"] is not None, args


def test_plan_ranks_by_quantization_loss(tmp_path: Path) -> None:
    """A 70B at Q2_K (measured KL divergence 0.445) no longer ties a 32B at Q6_K (0.005)."""
    from homellm.catalog import load_catalog
    from homellm.plan.advisor import quality

    catalog = load_catalog()
    q2 = quality(catalog.model("llama3.3:70b"), "Q2_K", "code", catalog)
    q6 = quality(catalog.model("qwen2.5:32b"), "Q6_K", "code", catalog)
    assert q6 > q2 + 1


def test_fit_refuses_a_context_beyond_training(tmp_path: Path) -> None:
    r = homellm("fit", "smollm2:135m", "--ctx", "32768", home=tmp_path)
    assert r.returncode == 2 and "trained on 8,192 tokens" in r.stderr and "--rope-scaling" in r.stderr
    ok = homellm("fit", "smollm2:135m", "--ctx", "32768", "--rope-scaling", home=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "--rope-scaling yarn --rope-scale 4 --yarn-orig-ctx 8192" in ok.stdout and "YaRN" in ok.stderr


def test_fit_exits_non_zero_when_it_does_not_fit(tmp_path: Path) -> None:
    r = homellm("fit", "llama3.3:70b", "--gpu", "RTX 4090", "--ram", "16", home=tmp_path)
    assert r.returncode == 1 and "does not fit" in r.stdout
    data = homellm("fit", "llama3.3:70b", "--gpu", "RTX 4090", "--ram", "16", "--json", home=tmp_path)
    assert data.returncode == 1 and json.loads(data.stdout)["fits"] is False


def test_guide_json_covers_every_claim_with_a_verdict(tmp_path: Path) -> None:
    r = homellm("guide", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert len(data["claims"]) > 300 and sum(data["summary"].values()) == len(data["claims"])
    claim = data["claims"][0]
    assert set(claim) >= {"section", "section_en", "ja", "en", "verdict", "figure", "basis", "correction"}
    wrong = homellm("guide", "--verdict", "wrong", "--gpu", "RTX 5080", home=tmp_path)
    assert wrong.returncode == 0 and "RTX 5080 is slower than RTX 4090" in wrong.stdout


def test_buy_finds_the_cheapest_card_within_budget(tmp_path: Path) -> None:
    r = homellm("buy", "qwen2.5:32b", "--min-tokens-per-s", "20", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    options = json.loads(r.stdout)["options"]
    prices = [o["price_jpy"] for o in options]
    assert prices == sorted(prices) and options[0]["decode_tokens_per_s"] >= 20
    assert all(o["vram_used_bytes"] > 18 * 1024**3 for o in options)
    cheap = homellm("buy", "qwen2.5:32b", "--budget", "300000JPY", "--json", home=tmp_path)
    assert all(o["price_jpy"] <= 300000 for o in json.loads(cheap.stdout)["options"])


def test_models_and_gpus_json(tmp_path: Path) -> None:
    models = json.loads(homellm("models", "--json", home=tmp_path).stdout)
    assert {"gpt-oss:20b", "deepseek-r1:671b"} <= {m["id"] for m in models}
    gpus = json.loads(homellm("gpus", "--json", home=tmp_path).stdout)
    assert any(g["name"] == "RTX 5090" and g["vram_gib"] == 32 for g in gpus)


def test_homellm_home_decides_where_the_models_folder_is(tmp_path: Path) -> None:
    r = homellm("plan", "--use-case", "chat", "--json", home=tmp_path / "state")
    assert json.loads(r.stdout)["hardware"]["models_dir"] == str(tmp_path / "state" / "models")


def test_an_internal_error_is_one_line_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import homellm.cli.advisor as advisor_cli
    from homellm.cli.main import main

    def broken() -> None:
        raise RuntimeError("catalog exploded")

    monkeypatch.setattr(advisor_cli, "_catalog", broken)
    monkeypatch.setattr(sys, "argv", ["homellm", "models"])
    monkeypatch.delenv("HOMELLM_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 70
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: catalog exploded" in err and "Traceback" not in err


def test_usage_errors_from_typer_exit_2() -> None:
    r = homellm("fit")
    assert r.returncode == 2 and "Missing argument" in r.stderr


def test_models_scores_show_the_guides_benchmark_table(tmp_path: Path) -> None:
    table = homellm("models", "--scores", home=tmp_path).stdout
    assert "GPT-4o (cloud)" in table and "Claude 3.5 Sonnet (cloud)" in table and "deepseek-r1:671b" in table
    data = json.loads(homellm("models", "--scores", "--json", home=tmp_path).stdout)
    assert all(s["source"] for scores in data["cloud"].values() for s in scores)
    assert {"HumanEval", "GSM8K"} <= {s["benchmark"] for s in data["cloud"]["Claude 3.5 Sonnet"]}


def test_hex_strings_are_printed_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    """Fingerprints are compared by eye: ':CD:' must not become an emoji."""
    from homellm.cli.output import console

    console.print("fingerprint: SHA256:08:F7:CD:88:BE:EF:FA:CE:00")
    assert "SHA256:08:F7:CD:88:BE:EF:FA:CE:00" in capsys.readouterr().out
