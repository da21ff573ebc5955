"""tests/fake_openai.py as a standalone process for the benchmarks, with TCP_NODELAY.

``BaseHTTPRequestHandler`` writes the headers and the body in two sends; without
TCP_NODELAY, Nagle's algorithm holds the body until the client's delayed ACK (about
40 ms on Linux), which real model servers (uvicorn, vLLM, llama.cpp) do not do.
Usage: ``python -m bench.fake_server --delay S --port-file F``.
"""

from __future__ import annotations

import argparse
import time

from tests.fake_openai import FakeOpenAIServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--nagle", action="store_true", help="keep Nagle's algorithm on (as tests do)")
    args = parser.parse_args()
    server = FakeOpenAIServer(delay=args.delay)
    server._httpd.RequestHandlerClass.disable_nagle_algorithm = not args.nagle
    server.start()
    with open(args.port_file, "w") as fh:
        fh.write(server.base_url)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
