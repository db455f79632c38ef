"""``plan``/``fit --with WORKER``: layers over this machine and a worker's device, the link's cost per token,
and the verdict beside this machine alone and the largest quantization that fits alone."""

from __future__ import annotations

from dataclasses import replace

import pytest

from homellm.catalog import Catalog
from homellm.hardware.detect import apply_overrides
from homellm.hardware.types import GIB, CpuInfo, HardwareProfile, LinkSpeed, RemoteDevice
from homellm.plan.fit import resolve_model
from homellm.plan.link import token_traffic
from homellm.plan.memory import ContextParams
from homellm.plan.split import SplitAdvice, advise_split, tensor_split

BARE = HardwareProfile((), CpuInfo(cores=8, threads=16), 64 * GIB, None, None, "/tmp", "Linux")
GBE = LinkSpeed(0.0004, 117e6, 117e6, "2026-11-29T00:00:00+00:00")  # a 1 GbE LAN, as the probe measures it
SLOW = LinkSpeed(0.010, 12e6, 12e6, "2026-11-29T00:00:00+00:00")  # 100 Mbit/s, 5 ms each way


def _worker(catalog: Catalog, gpu: str | None, offered_gib: float, link: LinkSpeed) -> RemoteDevice:
    found = apply_overrides(BARE, catalog, [gpu], None, None).gpus[0] if gpu else None
    kind = "gpu" if found else "cpu"
    return RemoteDevice("pc2", "CUDA0" if found else "CPU", gpu or "CPU", kind, int(offered_gib * GIB), link, found,
                        BARE.cpu)  # fmt: skip


def _advise(
    catalog: Catalog, model: str, quant: str | None, gpus: list[str], ram: float, worker: RemoteDevice, ctx: int = 4096
) -> SplitAdvice:
    hw = replace(apply_overrides(BARE, catalog, gpus or None, None, ram), remotes=(worker,))
    return advise_split(resolve_model(model, quant, catalog), ContextParams(ctx=ctx), hw, catalog)


@pytest.mark.parametrize(
    ("model", "quant", "gpus", "ram", "gpu", "offered", "link", "verdict"),
    [
        ("llama3.1:8b", None, ["RTX 4090"], 64, "RTX 4090", 24, GBE, "alone"),  # fits one card: the link only costs
        ("llama3.3:70b", "Q4_K_M", ["RTX 4090"], 64, "RTX 4090", 22, GBE, "split"),  # two cards beat RAM offload
        ("qwen2.5:14b", "Q4_K_M", [], 10, None, 4, SLOW, "smaller"),  # a CPU worker on a slow link: Q2_K alone wins
        ("qwen2.5:14b", "Q4_K_M", [], 10, None, 0.1, GBE, "smaller"),  # the worker lends too little for the split
        ("llama3.3:70b", "Q4_K_M", [], 8, None, 1, GBE, "none"),  # nothing fits anywhere
    ],
)  # fmt: skip
def test_the_verdict_says_whether_splitting_is_worth_it(
    catalog: Catalog, model: str, quant: str | None, gpus: list[str], ram: float, gpu: str | None, offered: float,
    link: LinkSpeed, verdict: str,
) -> None:  # fmt: skip
    advice = _advise(catalog, model, quant, gpus, ram, _worker(catalog, gpu, offered, link))
    assert advice.verdict == verdict, advice.summary
    split, alone = advice.split.decode_tokens_per_s or 0, advice.alone.decode_tokens_per_s or 0
    if verdict == "alone":
        assert advice.alone.fits and alone >= split and "not worth it" in advice.summary
    elif verdict == "split":
        assert advice.split.fits and split > alone and "worth it" in advice.summary
    elif verdict == "smaller":
        assert advice.smaller is not None and advice.smaller.fits and not advice.alone.fits
        assert advice.smaller.model.quant in advice.summary
    else:
        assert not advice.split.fits and not advice.alone.fits and advice.smaller is None


def test_layers_go_over_both_machines_in_llama_cpps_device_order_like_tensor_split(catalog: Catalog) -> None:
    # llama.cpp offloads the last layers and deals them out in its device order, the worker's device first
    cpu_only = _advise(catalog, "qwen2.5:14b", "Q4_K_M", [], 10, _worker(catalog, None, 4, GBE))
    (remote,) = (d for d in cpu_only.split.devices if d.kind == "remote")
    assert remote.holds_output and remote.layers[-1] == 47 and remote.used_bytes <= 4 * GIB
    assert tensor_split(cpu_only.split) is None  # one offload device: n_gpu_layers says it all
    with_gpu = _advise(catalog, "llama3.3:70b", "Q4_K_M", ["RTX 4090"], 64, _worker(catalog, "RTX 4090", 22, GBE))
    remote, gpu = (d for d in with_gpu.split.devices if d.kind in ("remote", "gpu"))
    assert remote.kind == "remote" and gpu.holds_output and not remote.holds_output
    assert remote.layers[-1] + 1 == gpu.layers[0] and gpu.layers[-1] == 79 and remote.used_bytes <= 22 * GIB
    assert tensor_split(with_gpu.split) == (float(len(remote.layers)), len(gpu.layers) + 1.0)


def test_the_link_costs_one_round_trip_and_what_crosses_it_per_token(catalog: Catalog) -> None:
    model = resolve_model("llama3.3:70b", "Q4_K_M", catalog)
    up, down = token_traffic(model.arch, 4096, output_remote=True)
    assert down == 8 + model.arch.n_vocab * 4  # the last token's logits, as floats
    assert token_traffic(model.arch, 4096, output_remote=False)[1] == 8 + model.arch.n_embd * 4  # or its activations
    fast = _advise(catalog, "llama3.3:70b", "Q4_K_M", ["RTX 4090"], 64, _worker(catalog, "RTX 4090", 22, GBE))
    slow = _advise(catalog, "llama3.3:70b", "Q4_K_M", ["RTX 4090"], 64, _worker(catalog, "RTX 4090", 22, SLOW))
    (remote,) = (d for d in fast.split.devices if d.kind == "remote")
    up, down = token_traffic(model.arch, 4096, remote.holds_output)
    per_token = 1 / (slow.split.decode_tokens_per_s or 1) - 1 / (fast.split.decode_tokens_per_s or 1)
    expected = (SLOW.rtt_s - GBE.rtt_s) + (up + down) * (1 / SLOW.up_bytes_per_s - 1 / GBE.up_bytes_per_s)
    assert per_token == pytest.approx(expected, rel=0.01)
