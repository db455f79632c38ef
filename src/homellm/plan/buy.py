"""``homellm buy``: the cheapest GPU (or GPU pair) and build that runs a model at a given speed."""

from __future__ import annotations

import re
from dataclasses import dataclass

from homellm.catalog import Catalog
from homellm.catalog.schema import Build, GpuSpec
from homellm.errors import UsageError
from homellm.hardware.detect import device_from_spec
from homellm.hardware.types import GIB, CpuInfo, HardwareProfile
from homellm.i18n import _
from homellm.plan.fit import FitResult, ResolvedModel, fit_model
from homellm.plan.memory import ContextParams

_MONEY = re.compile(r"^\s*([0-9][0-9,_.]*)\s*(k|m)?\s*(jpy|yen|円|usd|\$)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Money:
    amount: int
    currency: str  # JPY | USD


def parse_money(text: str) -> Money:
    """``300000JPY``, ``300k JPY``, ``2000USD``, ``$2000``, ``1.2m円``."""
    raw = text.strip()
    if raw.startswith("$"):
        raw = raw[1:] + "USD"
    m = _MONEY.match(raw)
    if not m:
        raise UsageError(_("cannot read the budget {text!r}; write it like 300000JPY or 2000USD").format(text=text))
    amount = float(m.group(1).replace(",", "").replace("_", ""))
    amount *= {"k": 1e3, "m": 1e6}.get((m.group(2) or "").lower(), 1)
    unit = (m.group(3) or "").lower()
    if not unit:
        raise UsageError(_("say which currency the budget {text!r} is in: JPY or USD").format(text=text))
    return Money(int(amount), "USD" if unit in ("usd", "$") else "JPY")


@dataclass
class Option:
    gpus: list[GpuSpec]
    fit: FitResult
    price_jpy: int
    price_usd: int
    build: Build | None

    @property
    def label(self) -> str:
        names = [g.name for g in self.gpus]
        return names[0] if len(names) == 1 else f"2x {names[0]}" if len(set(names)) == 1 else " + ".join(names)


def _platform(gpus: list[GpuSpec], need_ram_gib: float, catalog: Catalog) -> tuple[int, int, Build | None]:
    """The guide's build that matches these GPUs, else the cheapest build with enough RAM as a platform."""
    if gpus[0].unified_memory:
        return 0, 0, None  # the price is the whole Mac
    names = sorted(g.name for g in gpus)
    for b in catalog.builds:
        if sorted(catalog.gpu(n).name for n in b.gpus) == names and b.ram_gib >= need_ram_gib:
            return b.platform_price_jpy, b.platform_price_usd, b
    fitting = [b for b in catalog.builds if b.ram_gib >= need_ram_gib] or list(catalog.builds)
    b = min(fitting, key=lambda b: b.platform_price_jpy)
    return b.platform_price_jpy, b.platform_price_usd, None


def _profile(gpus: list[GpuSpec], ram_gib: float) -> HardwareProfile:
    devices = tuple(
        device_from_spec(g, origin="buy", name=g.name if gpus.count(g) == 1 else f"{g.name} #{i + 1}")
        for i, g in enumerate(gpus)
    )
    ram = int((gpus[0].vram_gib if gpus[0].unified_memory else ram_gib) * GIB)
    return HardwareProfile(devices, CpuInfo(cores=8, threads=16), ram, None, None, "", "")


def shop(
    model: ResolvedModel,
    params: ContextParams,
    catalog: Catalog,
    min_tokens_per_s: float = 0.0,
    budget: Money | None = None,
) -> list[Option]:
    """Every single GPU and identical pair that runs ``model`` fully on the GPU(s), cheapest first."""
    options = []
    for spec in catalog.gpus:
        if spec.price_jpy is None or spec.price_usd is None:
            continue  # no verified list price to compare
        for count in (1, 2):
            if count == 2 and spec.unified_memory:
                continue
            gpus = [spec] * count
            hw = _profile(gpus, ram_gib=64)
            fit = fit_model(model, params, hw, catalog, gpu_layers=model.arch.n_layer + 1)
            if not fit.fits or (fit.decode_tokens_per_s or 0) < min_tokens_per_s:
                continue
            ram_need = fit.devices[-1].used_bytes / GIB + 8
            pj, pu, build = _platform(gpus, ram_need, catalog)
            opt = Option(gpus, fit, spec.price_jpy * count + pj, spec.price_usd * count + pu, build)
            if budget and (opt.price_jpy if budget.currency == "JPY" else opt.price_usd) > budget.amount:
                continue
            options.append(opt)
            break  # a pair of a card that already fits alone is never cheaper
    options.sort(key=lambda o: o.price_jpy)
    return options
