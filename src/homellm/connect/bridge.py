"""``homellm bridge``: a local Ollama look-alike on loopback that forwards to the paired server.

Apps that speak Ollama but cannot send an API key (editor plugins, Open WebUI, the ollama CLI)
point at http://127.0.0.1:11434 as if Ollama ran locally. The bridge forwards every request
over TLS pinned to the server's certificate, with the profile's key added; streams pass through
as they come and a client leaving closes the upstream request.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from homellm.connect.profiles import Profile
from homellm.errors import UsageError

_DROP = {"host", "authorization", "x-api-key", "content-length", "connection", "keep-alive", "transfer-encoding",
         "te", "upgrade", "proxy-authorization", "accept-encoding"}  # fmt: skip
_DROP_BACK = {"content-length", "connection", "keep-alive", "transfer-encoding", "content-encoding"}


class Bridge:
    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.client = httpx.AsyncClient(
            base_url=profile.url,
            verify=profile.ssl_context(),
            headers={"Authorization": f"Bearer {profile.key}"},
            timeout=httpx.Timeout(connect=10, read=None, write=30, pool=None),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        url = scope["path"] + (f"?{scope['query_string'].decode()}" if scope.get("query_string") else "")
        try:
            upstream = await self.client.send(
                self.client.build_request(scope["method"], url, content=body, headers=headers), stream=True
            )
        except httpx.HTTPError as exc:
            await JSONResponse(
                {"error": f"homellm bridge: the server {self.profile.url} is not reachable ({exc})"}, status_code=502
            )(scope, receive, send)
            return
        back = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP_BACK}
        ctype = upstream.headers.get("content-type", "application/octet-stream")
        if "ndjson" in ctype or "event-stream" in ctype:
            headers = {k: v for k, v in back.items() if k.lower() != "content-type"}
            await StreamingResponse(_raw(upstream), upstream.status_code, headers, ctype)(scope, receive, send)
            return
        try:
            content = await upstream.aread()
        finally:
            await upstream.aclose()
        await Response(content, status_code=upstream.status_code, headers=back)(scope, receive, send)


async def _raw(upstream: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    finally:
        await upstream.aclose()


def ensure_port_free(port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise UsageError(
                f"port {port} is in use on this machine (a local Ollama?); run the bridge on another port, e.g. "
                f"--port {port + 66}, and set OLLAMA_HOST=127.0.0.1:{port + 66}"
            ) from None


def run_bridge(profile: Profile, port: int) -> None:
    import uvicorn

    ensure_port_free(port)
    uvicorn.run(Bridge(profile), host="127.0.0.1", port=port, log_level="warning", access_log=False,
                proxy_headers=False, server_header=False, timeout_graceful_shutdown=3)  # fmt: skip
