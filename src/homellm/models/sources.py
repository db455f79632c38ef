"""Where a model's GGUF file is, its size and its sha256: one protocol per registry, one interface.

Ollama's registry (the OCI distribution API, as ``ollama pull`` speaks it: server/images.go and
server/download.go): ``GET /v2/<namespace>/<model>/manifests/<tag>`` returns a manifest whose layer of
media type ``application/vnd.ollama.image.model`` is the GGUF, fetched at
``/v2/<namespace>/<model>/blobs/sha256:<hex>`` (which redirects to a CDN that honours Range).

Hugging Face (what ``hf.co/ORG/REPO:QUANT`` names in Ollama): ``GET <endpoint>/api/models/<repo>/tree/main``
lists the files with their LFS sha256 and size; ``<endpoint>/<repo>/resolve/main/<file>`` redirects to
the CDN. ``HF_ENDPOINT`` replaces the endpoint (mirrors), ``HF_TOKEN`` opens gated repos.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from homellm.errors import HomeLLMError, UsageError
from homellm.i18n import _
from homellm.models.refs import ModelRef

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
MODEL_LAYER = "application/vnd.ollama.image.model"
MAX_INDEX_BYTES = 8 * 1024 * 1024  # a manifest or a file list; anything larger is not one
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Ollama's default for hf.co without a quantization: Q4_K_M when the repo has it, else a reasonable one
_HF_PREFERENCE = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q6_K", "Q8_0", "IQ4_XS", "Q4_0", "Q3_K_M", "Q2_K", "F16", "BF16")


class RegistryError(HomeLLMError):
    """A registry answered, but not with a model homellm can download."""


@dataclass(frozen=True)
class RemoteFile:
    ref: ModelRef
    url: str  # the first hop; it may redirect to a CDN
    size: int
    sha256: str  # hex
    filename: str  # the path under the models folder
    headers: dict[str, str] = field(default_factory=dict)  # credentials for the registry only


class ModelSource(Protocol):
    def locate(self, ref: ModelRef, client: httpx.Client) -> RemoteFile: ...


def _read_json(resp: httpx.Response, what: str) -> Any:
    if int(resp.headers.get("content-length") or 0) > MAX_INDEX_BYTES or len(resp.content) > MAX_INDEX_BYTES:
        raise RegistryError(_("the {what} is larger than {n} MiB; not a model index").format(what=what, n=8))
    try:
        return json.loads(resp.content)
    except ValueError as exc:
        raise RegistryError(_("the {what} is not JSON ({error})").format(what=what, error=exc)) from None


def _get(client: httpx.Client, url: str, headers: dict[str, str], what: str) -> httpx.Response:
    try:
        resp = client.get(url, headers=headers, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise RegistryError(_("cannot reach {url}: {error}").format(url=url, error=exc)) from None
    return resp


class OllamaRegistry:
    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")

    def locate(self, ref: ModelRef, client: httpx.Client) -> RemoteFile:
        url = f"{self.base}/v2/{ref.repo}/manifests/{ref.tag}"
        resp = _get(client, url, {"Accept": ", ".join(MANIFEST_TYPES)}, "manifest")
        if resp.status_code == 404:
            short = ref.repo.removeprefix("library/")
            raise UsageError(
                _("the Ollama library has no {name} (tag {tag}; see https://ollama.com/library/{model}/tags)").format(
                    name=ref.name, tag=f"{short}:{ref.tag}", model=short
                )
            )
        if resp.status_code in (401, 403):
            raise RegistryError(_("the registry wants a login for {name}; homellm pulls public models").format(
                name=ref.name))  # fmt: skip
        if resp.status_code != 200:
            raise RegistryError(_("the registry answered {status} for {url}").format(status=resp.status_code, url=url))
        manifest = _read_json(resp, "manifest")
        layers = manifest.get("layers") if isinstance(manifest, dict) else None
        models = [x for x in layers or [] if isinstance(x, dict) and x.get("mediaType") == MODEL_LAYER]
        if not models:
            raise RegistryError(
                _("{name} has no GGUF layer (media type {type})").format(name=ref.name, type=MODEL_LAYER)
            )
        layer = models[0]
        digest = str(layer.get("digest", ""))
        algo, _sep, hexdigest = digest.partition(":")
        size = layer.get("size")
        if algo != "sha256" or not _SHA256.match(hexdigest) or not isinstance(size, int) or size <= 0:
            raise RegistryError(_("{name}: the manifest's model layer is malformed").format(name=ref.name))
        stem = ref.name.replace("/", "-").replace(":", "-")
        return RemoteFile(ref, f"{self.base}/v2/{ref.repo}/blobs/sha256:{hexdigest}", size, hexdigest, f"{stem}.gguf")


class HuggingFace:
    def __init__(self, endpoint: str, token: str | None = None) -> None:
        self.base = endpoint.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def locate(self, ref: ModelRef, client: httpx.Client) -> RemoteFile:
        url = f"{self.base}/api/models/{ref.repo}/tree/main?recursive=true"
        resp = _get(client, url, self.headers, "file list")
        if resp.status_code in (401, 403):
            message = _("{repo} is gated or private: accept its terms on Hugging Face and set HF_TOKEN")
            raise RegistryError(message.format(repo=ref.repo))
        if resp.status_code == 404:
            raise UsageError(_("Hugging Face has no repository {repo}").format(repo=ref.repo))
        if resp.status_code != 200:
            raise RegistryError(_("{url} answered {status}").format(url=url, status=resp.status_code))
        entries = _read_json(resp, "file list")
        ggufs = [
            e for e in entries if isinstance(e, dict) and e.get("type") == "file"
            and str(e.get("path", "")).lower().endswith(".gguf") and "mmproj" not in str(e.get("path", "")).lower()
        ]  # fmt: skip
        chosen = self._choose(ref, ggufs)
        path = str(chosen["path"])
        lfs = chosen.get("lfs") or {}
        sha, size = str(lfs.get("oid", "")), lfs.get("size", chosen.get("size"))
        if not _SHA256.match(sha) or not isinstance(size, int) or size <= 0:
            raise RegistryError(_("{path} has no sha256 to verify (not an LFS file)").format(path=path))
        basename = path.rsplit("/", 1)[-1]
        return RemoteFile(
            ref, f"{self.base}/{ref.repo}/resolve/main/{quote(path)}", size, sha, f"hf.co/{ref.repo}/{basename}",
            dict(self.headers),
        )  # fmt: skip

    @staticmethod
    def _choose(ref: ModelRef, ggufs: list[dict[str, Any]]) -> dict[str, Any]:
        def quant_of(entry: dict[str, Any]) -> set[str]:
            name = str(entry["path"]).rsplit("/", 1)[-1].upper()
            return set(
                re.findall(r"(?<![A-Z0-9])(I?Q\d[A-Z0-9_]*?|F16|BF16|F32)(?=[.\-]|$)", name.removesuffix(".GGUF"))
            )

        if not ggufs:
            raise UsageError(_("{repo} has no .gguf file").format(repo=ref.repo))
        wanted = [ref.tag] if ref.tag else list(_HF_PREFERENCE)
        for quant in wanted:
            matches = [e for e in ggufs if quant in quant_of(e)]
            if len(matches) > 1 and any(re.search(r"-\d{5}-of-\d{5}", str(e["path"])) for e in matches):
                raise UsageError(_("{repo} {quant} is split into {n} files; homellm pulls single-file GGUFs").format(
                    repo=ref.repo, quant=quant, n=len(matches)))  # fmt: skip
            if matches:
                return matches[0]
        if not ref.tag and len(ggufs) == 1:
            return ggufs[0]
        have = sorted({q for e in ggufs for q in quant_of(e)})
        listed = ", ".join(have) or _("no recognisable quantization")
        message = _("{repo} has no {quant} file; it has {have}")
        raise UsageError(message.format(repo=ref.repo, quant=ref.tag or "Q4_K_M", have=listed))


def source_for(ref: ModelRef, ollama_registry: str, hf_endpoint: str, hf_token: str | None) -> ModelSource:
    if ref.source == "huggingface":
        return HuggingFace(hf_endpoint, hf_token)
    return OllamaRegistry(ollama_registry)
