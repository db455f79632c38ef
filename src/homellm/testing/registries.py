"""Stand-ins for Ollama's registry and Hugging Face on loopback, for the ``homellm pull`` tests.

They speak each registry's protocol where the client depends on it:

* Ollama (registry.ollama.ai, the OCI distribution API): ``GET /v2/<ns>/<model>/manifests/<tag>`` with
  the docker v2 manifest media type and a ``Docker-Content-Digest`` header, 404 with an OCI error body
  for an unknown tag; ``GET|HEAD /v2/<ns>/<model>/blobs/sha256:<hex>`` answers 307 to a CDN host.
* Hugging Face: ``GET /api/models/<org>/<repo>/tree/main`` lists files with their LFS sha256 and size;
  ``GET|HEAD /<org>/<repo>/resolve/main/<file>`` answers 302 to the CDN with ``X-Repo-Commit``,
  ``X-Linked-Etag`` and ``X-Linked-Size``.
* The CDN (a second server, so a different origin, like R2 or the Xet bridge): ``Accept-Ranges``,
  ``Range`` -> 206 with ``Content-Range``, an unsatisfiable range -> 416 with ``bytes */size``.

Faults for tests: cut the connection after N bytes (once), corrupt one byte, hold the stream at N
bytes until a gate opens. Every request is recorded (method, path, Range header).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from homellm.testing.fake_backend import serve_in_thread

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Faults:
    cut_after: int | None = None  # close the connection once this many bytes of the file have gone out
    corrupt_at: int | None = None  # flip this byte of the file in every response
    hold_at: int | None = None  # stop sending at this offset until `release` is set
    release: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)  # set when a stream reaches hold_at
    _cut_done: bool = False


@dataclass
class Recorded:
    method: str
    host: str
    path: str
    range: str | None


@dataclass
class Blob:
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _cdn_app(blobs: dict[str, Blob], faults: Faults, log: list[Recorded]) -> Starlette:
    async def blob(request: Request) -> Response:
        digest = request.path_params["digest"]
        rng = request.headers.get("range")
        log.append(Recorded(request.method, request.url.netloc, request.url.path, rng))
        if digest not in blobs:
            return Response("NoSuchKey", status_code=404)
        data = blobs[digest].data
        size = len(data)
        start, end = 0, size - 1
        status = 200
        if rng:
            m = _RANGE.match(rng)
            if not m or int(m.group(1)) >= size:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
            start, end = int(m.group(1)), min(int(m.group(2) or size - 1), size - 1)
            status = 206
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start + 1), "ETag": f'"{digest}"',
                   "Content-Type": "application/octet-stream"}  # fmt: skip
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        return StreamingResponse(_body(data, start, end + 1, faults), status_code=status, headers=headers)

    return Starlette(routes=[Route("/blobs/{digest}", blob, methods=["GET", "HEAD"])])


async def _body(data: bytes, start: int, stop: int, faults: Faults) -> AsyncIterator[bytes]:
    pos = start
    step = 64 * 1024
    while pos < stop:
        end = min(pos + step, stop)
        if faults.hold_at is not None and pos < faults.hold_at <= end:
            end = faults.hold_at
        if faults.cut_after is not None and not faults._cut_done and pos < faults.cut_after <= end:
            end = faults.cut_after
        chunk = bytearray(data[pos:end])
        if faults.corrupt_at is not None and pos <= faults.corrupt_at < end:
            chunk[faults.corrupt_at - pos] ^= 0xFF
        yield bytes(chunk)
        pos = end
        if faults.cut_after is not None and not faults._cut_done and pos == faults.cut_after:
            faults._cut_done = True
            raise ConnectionResetError("stand-in: connection cut mid-file")
        if faults.hold_at is not None and pos == faults.hold_at and pos < stop:
            faults.held.set()
            await asyncio.to_thread(faults.release.wait, 120)
        await asyncio.sleep(0)


@dataclass
class RegistryStandIns:
    ollama: str  # base URL of the Ollama registry stand-in
    hf: str  # base URL of the Hugging Face stand-in (what HF_ENDPOINT would be)
    cdn: str
    faults: Faults
    log: list[Recorded]

    def blob_requests(self) -> list[Recorded]:
        return [r for r in self.log if r.path.startswith("/blobs/") and r.method == "GET"]


@contextlib.contextmanager
def registries(
    gguf: Path,
    *,
    ollama_name: str = "library/smollm2",
    ollama_tag: str = "135m",
    hf_repo: str = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
    hf_file: str = "smollm2-135m-instruct-q4_1.gguf",
    faults: Faults | None = None,
) -> Iterator[RegistryStandIns]:
    """Serve ``gguf`` as an Ollama model (``ollama_name:ollama_tag``) and as an HF repo file."""
    blob = Blob(gguf.read_bytes())
    faults = faults or Faults()
    log: list[Recorded] = []
    blobs = {blob.sha256: blob}
    with serve_in_thread(_cdn_app(blobs, faults, log)) as cdn:
        config = json.dumps({"model_format": "gguf", "model_family": "llama"}).encode()
        config_digest = hashlib.sha256(config).hexdigest()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": f"sha256:{config_digest}", "size": len(config)},
            "layers": [
                {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{blob.sha256}",
                 "size": len(blob.data)},
                {"mediaType": "application/vnd.ollama.image.license", "digest": f"sha256:{'0' * 64}", "size": 11},
            ],
        }).encode()  # fmt: skip

        async def manifests(request: Request) -> Response:
            log.append(Recorded(request.method, request.url.netloc, request.url.path, None))
            name = f"{request.path_params['ns']}/{request.path_params['model']}"
            if name != ollama_name or request.path_params["tag"] != ollama_tag:
                return JSONResponse({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
                                    status_code=404)  # fmt: skip
            digest = hashlib.sha256(manifest).hexdigest()
            headers = {"Content-Type": MANIFEST_TYPE, "Docker-Content-Digest": f"sha256:{digest}",
                       "Docker-Distribution-Api-Version": "registry/2.0"}  # fmt: skip
            return Response(manifest, headers=headers)

        async def blobs_route(request: Request) -> Response:
            log.append(Recorded(request.method, request.url.netloc, request.url.path, request.headers.get("range")))
            digest = request.path_params["digest"].removeprefix("sha256:")
            if digest not in blobs:
                return JSONResponse({"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]}, status_code=404)
            return Response(status_code=307, headers={"Location": f"{cdn}/blobs/{digest}?X-Amz-Expires=1200"})

        async def tree(request: Request) -> Response:
            log.append(Recorded(request.method, request.url.netloc, request.url.path, None))
            repo = f"{request.path_params['org']}/{request.path_params['repo']}"
            if repo != hf_repo:
                return JSONResponse({"error": "Repository not found"}, status_code=404)
            return JSONResponse([
                {"type": "file", "oid": "0" * 40, "size": 1519, "path": "README.md"},
                {"type": "file", "oid": "1" * 40, "size": len(blob.data), "path": hf_file,
                 "lfs": {"oid": blob.sha256, "size": len(blob.data), "pointerSize": 135}},
            ])  # fmt: skip

        async def resolve(request: Request) -> Response:
            log.append(Recorded(request.method, request.url.netloc, request.url.path, request.headers.get("range")))
            repo = f"{request.path_params['org']}/{request.path_params['repo']}"
            if repo != hf_repo or request.path_params["file"] != hf_file:
                return JSONResponse({"error": "Entry not found"}, status_code=404)
            headers = {"Location": f"{cdn}/blobs/{blob.sha256}?X-Xet-Signed=1", "X-Repo-Commit": "a" * 40,
                       "X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.data)),
                       "ETag": f'"{blob.sha256}"'}  # fmt: skip
            return Response(status_code=302, headers=headers)

        ollama_app = Starlette(routes=[
            Route("/v2/{ns}/{model}/manifests/{tag}", manifests, methods=["GET", "HEAD"]),
            Route("/v2/{ns}/{model}/blobs/{digest}", blobs_route, methods=["GET", "HEAD"]),
        ])  # fmt: skip
        hf_app = Starlette(routes=[
            Route("/api/models/{org}/{repo}/tree/main", tree, methods=["GET"]),
            Route("/{org}/{repo}/resolve/main/{file}", resolve, methods=["GET", "HEAD"]),
        ])  # fmt: skip
        with serve_in_thread(ollama_app) as ollama, serve_in_thread(hf_app) as hf:
            try:
                yield RegistryStandIns(ollama, hf, cdn, faults, log)
            finally:
                faults.release.set()
