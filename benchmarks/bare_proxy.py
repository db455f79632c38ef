"""The gateway's stack without the gateway: uvicorn (httptools, uvloop) forwarding each request to
the backend through one aiohttp session and answering with the backend's body, nothing checked,
logged or parsed. benchmarks/gateway_overhead.py runs it as a calibration row: what this machine
gives that stack today, so that the gateway's own share of the cost can be read off.

    python benchmarks/bare_proxy.py --backend http://127.0.0.1:11434 --port 18000
"""

from __future__ import annotations

import argparse
from typing import Any


def make_app(backend: str) -> Any:
    import aiohttp

    session: aiohttp.ClientSession | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    session = aiohttp.ClientSession(
                        backend, connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
                    )
                    await send({"type": "lifespan.startup.complete"})
                else:
                    assert session is not None
                    await session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert session is not None
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        async with session.request(
            scope["method"], scope["path"], data=b"".join(chunks), headers={"Content-Type": "application/json"}
        ) as resp:
            body = await resp.read()
            ctype = resp.headers.get("Content-Type", "application/json").encode()
        await send(
            {
                "type": "http.response.start",
                "status": resp.status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.backend),
        host="127.0.0.1",
        port=args.port,
        http="httptools",
        loop="uvloop",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
    )


if __name__ == "__main__":
    main()
