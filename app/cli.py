"""The ``mmr`` command: ``mmr serve`` runs the API server."""

from __future__ import annotations

import argparse
import sys

import uvicorn


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="mmr", description="multimodal retrieval service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API (configuration: MMR_* variables)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args.host, args.port)
    return 2


def _serve(host: str, port: int) -> int:
    from app.main import create_app

    app = create_app()
    config = uvicorn.Config(app, host=host, port=port, log_level=app.state.settings.log_level)
    server = uvicorn.Server(config)
    server.run()
    # uvicorn returns normally when start-up fails (e.g. a strict model id that cannot load).
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
