"""The shipped catalog: models, GPUs, ggml types, quantization mixes, builds, benchmarks.

The data lives in TOML files beside this module (``data/``), one record per
table, each with its ``source``. :func:`load_catalog` validates all of it once
per process; lookups raise :class:`~homellm.errors.NotFoundError` with the
nearest valid names.
"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from importlib import resources
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from homellm.catalog.schema import (
    BenchmarkScore,
    Build,
    GgmlType,
    GpuSpec,
    GuideClaim,
    GuideSection,
    ModelSpec,
    QuantMix,
    ReferenceModel,
    SizeQuality,
    SpeedMeasurement,
)
from homellm.errors import CatalogError, NotFoundError
from homellm.i18n import _

__all__ = ["Catalog", "load_catalog", "normalize"]

T = TypeVar("T", bound=BaseModel)


def normalize(name: str) -> str:
    """Loose form of a name for lookups: case, spaces, dashes and the vendor prefix don't matter."""
    name = name.lower().replace("geforce", "").replace("nvidia", "").replace("radeon", "")
    return re.sub(r"[\s_\-]+", "", name)


class Catalog:
    def __init__(self, data: dict[str, list[dict[str, Any]]]) -> None:
        self.models = _parse(ModelSpec, data, "models")
        self.gpus = _parse(GpuSpec, data, "gpus")
        self.ggml_types = _parse(GgmlType, data, "ggml_types")
        self.mixes = _parse(QuantMix, data, "mixes")
        self.measurements = _parse(SpeedMeasurement, data, "measurements")
        self.builds = _parse(Build, data, "builds")
        self.claims = _parse(GuideClaim, data, "guide_claims")
        self.sections = {s.ja: s for s in _parse(GuideSection, data, "guide_sections")}
        self.references = _parse(ReferenceModel, data, "reference_models")
        size_quality = _parse(SizeQuality, data, "size_quality")
        if len(size_quality) != 1:
            raise CatalogError(_("the catalog needs exactly one size_quality record"))
        self.size_quality = size_quality[0]
        self.cloud_scores: dict[str, list[BenchmarkScore]] = {
            r.name: list(r.scores) for r in self.references if r.kind == "cloud"
        }
        self._references = {normalize(k): r for r in self.references for k in (r.name, *r.aliases)}
        self._types = {t.name: t for t in self.ggml_types}
        self._mixes = {normalize(m.name): m for m in self.mixes}
        for m in self.mixes:
            for alias in m.aliases:
                self._mixes[normalize(alias)] = m
        self._models = {m.id: m for m in self.models}
        self._gpus: dict[str, GpuSpec] = {}
        for g in self.gpus:
            for key in (g.name, *g.aliases):
                self._gpus.setdefault(normalize(key), g)  # a shared alias names the first (16 GB before 8 GB)
        self._check()

    def _check(self) -> None:
        for m in self.mixes:
            for t in (m.base, m.output, m.token_embd, m.experts, *(r.type for r in m.rules)):
                if t and t not in self._types:
                    raise CatalogError(_("mix {name} names unknown ggml type {type}").format(name=m.name, type=t))
        for model in self.models:
            for q in model.quants:
                if normalize(q) not in self._mixes:
                    raise CatalogError(_("model {id} lists unknown quant {quant}").format(id=model.id, quant=q))
        for b in self.builds:
            for g in b.gpus:
                self.gpu(g)
        for meas in self.measurements:
            self.gpu(meas.gpu)
        from homellm.catalog.claim_refs import check_claim_references

        for claim in self.claims:
            check_claim_references(claim, self)

    def ggml_type(self, name: str) -> GgmlType:
        try:
            return self._types[name.upper()]
        except KeyError:
            raise NotFoundError(_("ggml type"), name, self._types) from None

    def mix(self, name: str) -> QuantMix:
        try:
            return self._mixes[normalize(name)]
        except KeyError:
            raise NotFoundError(_("quantization"), name, [m.name for m in self.mixes]) from None

    def model(self, model_id: str) -> ModelSpec:
        key = model_id.strip().lower()
        if key in self._models:
            return self._models[key]
        if ":" not in key:  # like Ollama, a bare family name means its default tag
            for candidate in self.models:
                if candidate.id.split(":")[0] == key:
                    return candidate
        raise NotFoundError(_("model"), model_id, self._models)

    def reference(self, name: str) -> ReferenceModel | None:
        """A reference model (cloud, old or non-existent) by name or alias, if the catalog has one."""
        return self._references.get(normalize(name))

    def scores(self, name: str) -> tuple[str, list[BenchmarkScore]] | None:
        """(display name, primary-source scores) of a catalog model id or a reference model."""
        ref = self.reference(name)
        if ref is not None:
            return ref.name, list(ref.scores)
        try:
            spec = self.model(name)
        except NotFoundError:
            return None
        return spec.id, list(spec.benchmarks)

    def gpu(self, name: str) -> GpuSpec:
        try:
            return self._gpus[normalize(name)]
        except KeyError:
            raise NotFoundError(_("GPU"), name, [g.name for g in self.gpus]) from None


def _parse(kind: type[T], data: dict[str, list[dict[str, Any]]], key: str) -> list[T]:
    rows = data.get(key, [])
    out: list[T] = []
    for i, row in enumerate(rows):
        try:
            out.append(kind.model_validate(row))
        except ValidationError as exc:
            label = row.get("id") or row.get("name") or f"#{i + 1}"
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise CatalogError(
                _("catalog {key} entry {label}: {where}: {msg}").format(
                    key=key, label=label, where=where, msg=first["msg"]
                )
            ) from exc
    return out


@cache
def load_catalog() -> Catalog:
    """Load and validate the shipped catalog (cached per process)."""
    data: dict[str, list[dict[str, Any]]] = {}
    for entry in sorted(resources.files("homellm.catalog").joinpath("data").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            try:
                parsed = tomllib.loads(entry.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise CatalogError(
                    _("catalog file {name} is not valid TOML: {exc}").format(name=entry.name, exc=exc)
                ) from exc
            for key, rows in parsed.items():
                data.setdefault(key, []).extend(rows)
    return Catalog(data)
