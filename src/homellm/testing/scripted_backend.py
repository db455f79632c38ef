"""The scripted model server of :mod:`homellm.testing.fake_backend` as a process of its own.

Fault tests need a backend they can ``kill -9`` in the middle of a stream, which a server running
in the test's own thread cannot be. This runs the same scripted server (Ollama's or the OpenAI
API, tokens ``tok0 tok1 ...``) with its pacing from the command line::

    python -m homellm.testing.scripted_backend --kind ollama --port 18000 --delay 0.02
"""

from __future__ import annotations

import argparse

from homellm.testing.fake_backend import Recorder, Script, make_app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="the scripted model server on loopback, as a process")
    parser.add_argument("--kind", choices=["ollama", "openai"], default="ollama")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between streamed tokens")
    parser.add_argument("--tokens", type=int, default=5, help="tokens when the request names no count")
    parser.add_argument("--models", help="comma-separated models it serves (default: fake:small,fake:large)")
    parser.add_argument("--loaded", help="comma-separated models /api/ps lists (default: all it serves)")
    args = parser.parse_args(argv)
    script = Script(tokens=args.tokens, delay=args.delay)
    script.models = args.models.split(",") if args.models else None
    script.loaded = [m for m in args.loaded.split(",") if m] if args.loaded is not None else None
    app = make_app(args.kind, script, Recorder(), control=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":  # pragma: no cover
    main()
