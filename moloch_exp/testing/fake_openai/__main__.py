"""``python -m moloch_exp.testing.fake_openai [--port N] [--port-file F] [--options-json J] [--<option> V ...]``

Serves the fake OpenAI API on 127.0.0.1 until SIGTERM/SIGINT. Every :class:`FakeOptions` field is a
flag (``latency_s`` → ``--latency-s``; booleans ``--enforce`` / ``--no-enforce``; ``--models a b``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing

import uvicorn

from .app import build_app
from .server import bind_socket, uvicorn_config
from .state import FakeOptions


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m moloch_exp.testing.fake_openai", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--port-file", help="write the port here once listening (atomically)")
    p.add_argument("--options-json", help="a JSON object of options (flags given as well win)")
    hints = typing.get_type_hints(FakeOptions)
    for f in dataclasses.fields(FakeOptions):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        if hint is bool:
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        elif f.name == "models":
            p.add_argument(flag, dest=f.name, nargs="+", default=None)
        else:
            base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
            p.add_argument(flag, dest=f.name, type=base, default=None)
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    options = FakeOptions(**json.loads(args.options_json)) if args.options_json else FakeOptions()
    options.update(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FakeOptions)
                      if getattr(args, f.name) is not None})
    sock = bind_socket(args.host, args.port)
    port = sock.getsockname()[1]
    if args.port_file:
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w") as fh:
            fh.write(str(port))
        os.replace(tmp, args.port_file)
    print(f"fake OpenAI API on http://{args.host}:{port}/v1 (stats: http://{args.host}:{port}/_stats)", flush=True)
    uvicorn.Server(uvicorn_config(build_app(options))).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
