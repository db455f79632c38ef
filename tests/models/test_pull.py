"""``homellm pull`` against loopback stand-ins of Ollama's registry and Hugging Face serving the SmolLM2 GGUF.

No test reaches the internet: every pull names a stand-in (``HOMELLM_OLLAMA_REGISTRY``, ``HF_ENDPOINT``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from homellm.catalog import Catalog
from homellm.errors import UsageError
from homellm.hardware.types import GIB, CpuInfo, HardwareProfile
from homellm.models.pull import HEADER_BYTES, PullRefused, Registries, pull
from homellm.models.refs import parse_ref
from homellm.models.resolve import gguf_path_for
from homellm.models.transfer import ChecksumError
from homellm.testing.registries import Faults, RegistryStandIns, registries

HF_REF = "hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1"
THIS_MACHINE = HardwareProfile((), CpuInfo(cores=2, threads=2), 16 * GIB, None, None, "", "")
PLENTY = 1 << 50


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def stand_ins(smollm2: Path) -> Iterator[RegistryStandIns]:
    with registries(smollm2) as r:
        yield r


def _pull(r: RegistryStandIns, folder: Path, name: str = "smollm2:135m", **kw: object) -> object:
    from homellm.catalog import load_catalog

    options: dict[str, object] = {"hardware": THIS_MACHINE, "free_space": lambda _p: PLENTY}
    options.update(kw)
    return pull(name, catalog=load_catalog(), models_dir=folder, registries=Registries(r.ollama, r.hf),
                **options)  # type: ignore[arg-type]  # fmt: skip


def test_pull_from_the_ollama_registry(stand_ins: RegistryStandIns, smollm2: Path, tmp_path: Path) -> None:
    result = _pull(stand_ins, tmp_path)
    final = tmp_path / "smollm2-135m.gguf"
    assert final.read_bytes() == smollm2.read_bytes()
    assert result.model.quant == "Q4_1" and result.fit is not None and result.fit.fits  # type: ignore[attr-defined]
    paths = [r.path for r in stand_ins.log]
    assert paths[0] == "/v2/library/smollm2/manifests/135m"
    assert any(p.startswith("/v2/library/smollm2/blobs/sha256:") for p in paths)  # then 307 to the CDN
    assert all(r.host != stand_ins.ollama.split("//")[1] for r in stand_ins.blob_requests())
    assert not list(tmp_path.glob("*.partial"))


def test_a_connection_cut_mid_file_resumes_byte_identical(smollm2: Path, tmp_path: Path) -> None:
    cut = HEADER_BYTES + 5_000_000
    with registries(smollm2, faults=Faults(cut_after=cut)) as r:
        _pull(r, tmp_path)
        ranges = [x.range for x in r.blob_requests()]
    assert (tmp_path / "smollm2-135m.gguf").read_bytes() == smollm2.read_bytes()
    starts = [int(x.removeprefix("bytes=").split("-")[0]) for x in ranges if x]
    assert starts[:2] == [0, HEADER_BYTES]  # the header (fit check), then the rest of the file
    assert len(starts) == 3 and HEADER_BYTES < starts[2] <= cut  # after the cut: only what was missing


def test_a_corrupted_byte_is_refused_and_nothing_is_left(smollm2: Path, tmp_path: Path) -> None:
    with registries(smollm2, faults=Faults(corrupt_at=50_000_000)) as r, pytest.raises(ChecksumError) as info:
        _pull(r, tmp_path)
    assert "sha256" in str(info.value) and "discarded" in str(info.value)
    assert not (tmp_path / "smollm2-135m.gguf").exists()
    assert not list(tmp_path.rglob("*.partial"))


def test_a_disk_too_small_is_refused_before_the_download(stand_ins: RegistryStandIns, tmp_path: Path) -> None:
    with pytest.raises(PullRefused) as info:
        _pull(stand_ins, tmp_path, free_space=lambda _p: 50 * 1024 * 1024)
    assert "free disk" in str(info.value) and "0.05 GiB are free" in str(info.value)
    assert stand_ins.blob_requests() == [] and not list(tmp_path.rglob("*.gguf*"))


def test_a_model_that_does_not_fit_is_refused_with_the_numbers(stand_ins: RegistryStandIns, tmp_path: Path) -> None:
    tiny = HardwareProfile((), CpuInfo(), int(0.2 * GIB), None, None, "", "")
    with pytest.raises(PullRefused) as info:
        _pull(stand_ins, tmp_path, hardware=tiny)
    message = str(info.value)
    assert "does not fit this machine" in message and "GiB of weights" in message and "--force" in message
    assert not list(tmp_path.rglob("*.gguf*"))  # only the header was read, and it is gone
    forced = _pull(stand_ins, tmp_path, hardware=tiny, force=True)
    assert forced.fit is None and (tmp_path / "smollm2-135m.gguf").exists()  # type: ignore[attr-defined]


def _homellm(home: Path, r: RegistryStandIns, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, HOMELLM_HOME=str(home), HOMELLM_OLLAMA_REGISTRY=r.ollama, HF_ENDPOINT=r.hf, COLUMNS="120")
    exe = str(Path(sys.executable).with_name("homellm"))
    return subprocess.Popen([exe, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_and_a_new_process_resume_with_a_range_request(smollm2: Path, tmp_path: Path) -> None:
    hold = 40_000_000
    faults = Faults(hold_at=hold)
    with registries(smollm2, faults=faults) as r:
        first = _homellm(tmp_path, r, "pull", HF_REF)
        while not faults.held.wait(1):  # event-driven: the server says when it holds the stream
            if first.poll() is not None:
                pytest.fail(f"pull ended before the hold point: {first.communicate()}")
        first.send_signal(signal.SIGINT)
        _out, err = first.communicate(timeout=60)
        assert first.returncode == 130 and "run the same command to resume" in err
        (partial,) = (tmp_path / "models").rglob("*.partial")
        kept = partial.stat().st_size
        assert HEADER_BYTES <= kept <= hold
        faults.hold_at = None
        faults.release.set()
        second = _homellm(tmp_path, r, "pull", HF_REF)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        assert "resuming at" in out and "sha256 verified" in out
        assert f"bytes={kept}-" in [x.range for x in r.blob_requests()]
    (final,) = (tmp_path / "models").rglob("*.gguf")
    assert _sha(final) == _sha(smollm2) and not list((tmp_path / "models").rglob("*.partial"))


def test_hugging_face_honours_hf_endpoint_and_the_cli_lists_and_removes(
    stand_ins: RegistryStandIns, smollm2: Path, tmp_path: Path
) -> None:
    p = _homellm(tmp_path, stand_ins, "pull", HF_REF)
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    hf_host = stand_ins.hf.split("//")[1]
    assert any(x.host == hf_host and x.path.endswith("/tree/main") for x in stand_ins.log)
    listing = _homellm(tmp_path, stand_ins, "models", "--local", "--json")
    (entry,) = json.loads(listing.communicate(timeout=60)[0])
    assert entry["name"] == HF_REF and entry["source"] == "huggingface" and entry["quant"] == "Q4_1"
    assert _sha(Path(entry["path"])) == _sha(smollm2)
    removed = _homellm(tmp_path, stand_ins, "rm", HF_REF)
    assert removed.communicate(timeout=60)[0].startswith("removed") and not Path(entry["path"]).exists()


def test_unknown_names_are_one_clear_line(stand_ins: RegistryStandIns, tmp_path: Path) -> None:
    for name, message in (("qwen2.5:7b", "the Ollama library has no qwen2.5:7b"),
                          ("hf.co/nobody/nothing", "Hugging Face has no repository nobody/nothing")):  # fmt: skip
        p = _homellm(tmp_path, stand_ins, "pull", name)
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "source", "repo", "tag"),
    [
        ("qwen2.5:14b", "ollama", "library/qwen2.5", "14b"),
        ("qwen2.5:14b:q6_k", "ollama", "library/qwen2.5", "14b-instruct-q6_K"),
        ("phi4:14b:F16", "ollama", "library/phi4", "14b-fp16"),
        ("llama3.2:1b-instruct-q8_0", "ollama", "library/llama3.2", "1b-instruct-q8_0"),
        ("me/mymodel", "ollama", "me/mymodel", "latest"),
        ("hf.co/bartowski/Qwen2.5-7B-Instruct-GGUF:q4_k_m", "huggingface", "bartowski/Qwen2.5-7B-Instruct-GGUF",
         "Q4_K_M"),
    ],
)  # fmt: skip
def test_model_references(catalog: Catalog, text: str, source: str, repo: str, tag: str) -> None:
    ref = parse_ref(text, catalog)
    assert (ref.source, ref.repo, ref.tag) == (source, repo, tag)


@pytest.mark.parametrize("text", ["hf.co/../etc", "../../x", "qwen2.5:14b:Q9_X", "a b c"])
def test_bad_references_are_refused(catalog: Catalog, text: str) -> None:
    with pytest.raises(UsageError):
        parse_ref(text, catalog)


def test_up_and_serve_ask_before_pulling(catalog: Catalog, tmp_path: Path, smollm2: Path) -> None:
    asked: list[str] = []
    pulled = tmp_path / "pulled.gguf"

    def no(question: str) -> bool:
        asked.append(question)
        return False

    with pytest.raises(UsageError, match="homellm pull smollm2:135m"):
        gguf_path_for("smollm2:135m", catalog=catalog, models_dir=tmp_path, confirm=no, pull=lambda _m: pulled)
    assert asked and "Download it" in asked[0]
    assert gguf_path_for("smollm2:135m", catalog=catalog, models_dir=tmp_path, confirm=lambda _q: True,
                         pull=lambda _m: pulled) == pulled  # fmt: skip
    assert (
        gguf_path_for(str(smollm2), catalog=catalog, models_dir=tmp_path, confirm=no, pull=lambda _m: pulled) == smollm2
    )


def test_up_without_a_terminal_refuses_clearly(stand_ins: RegistryStandIns, tmp_path: Path) -> None:
    p = _homellm(tmp_path, stand_ins, "up", "smollm2:135m")
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "no terminal to ask" in err and "--yes" in err
    assert stand_ins.log == []  # nothing was asked of the registry
