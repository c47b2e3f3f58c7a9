"""``cisis-transport stub``: serve the DMP and téléservices stubs until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from transport.cli.common import print_json, wants_json
from transport.errors import UsageError

if TYPE_CHECKING:
    from transport.examplepki import ExamplePKI


def add_arguments(stub: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """Declare ``stub``'s options on its parser (made by
    :func:`transport.cli.parser`); ``common``: the options every subcommand accepts."""
    stub.description = "Serve the DMP and téléservices stubs over mutual TLS until Ctrl-C."
    stub.epilog = (
        "Default PKI: certs-example/ of a source checkout; for an installed package, the "
        "example PKI generated once in the user cache folder (cisis-transport/example-pki, e.g. "
        "~/.cache/cisis-transport/example-pki on Linux), with profile.example.toml beside it. "
        "The folder in use is printed at start."
    )
    stub.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    stub.add_argument("--port", type=_port, default=8443, help="port (8443; 0: any free port)")
    stub.add_argument(
        "--card-port",
        type=_port,
        default=0,
        help="port of the téléservices' card mode, server-only TLS (default: any free port)",
    )
    stub.add_argument(
        "--accept-any-idam",
        action="store_true",
        help="téléservices: accept any software IDAM (default: the example profile's only)",
    )
    stub.add_argument("--data", type=Path, metavar="DIR", help="keep the state in DIR")
    stub.add_argument(
        "--pki", type=Path, metavar="DIR", help="example PKI folder (default: see below)"
    )


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a port is a number from 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("a port is a number from 0 to 65535")
    return port


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM; exit 0 once stopped."""
    from transport import examplepki
    from transport.config import example_pki_directory
    from transport.stubs.app import SERVICES, Stubs, service_path

    logging.getLogger("transport.stubs").setLevel(logging.INFO)
    if args.data is not None and args.data.exists() and not args.data.is_dir():
        raise UsageError(f"--data {args.data}: not a folder", hint="name a folder for the state")
    pki = _pki(args.pki) if args.pki is not None else examplepki.load(example_pki_directory())
    try:
        stubs = Stubs(
            pki=pki,
            data_dir=args.data,
            host=args.host,
            port=args.port,
            card_port=args.card_port,
            accept_any_idam=args.accept_any_idam,
        )
    except OSError as error:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {error.strerror}") from None
    stubs.start()
    stopped = threading.Event()
    # Ctrl-C and SIGTERM end the wait below, and only that: shutdown then runs uninterrupted.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stopped.set())
    as_json = wants_json(args)
    if as_json:  # the one document, printed once listening: where everything is
        print_json(
            {
                "url": stubs.url,
                "services": {name: f"{stubs.url}{service_path(name)}" for name in SERVICES},
                "card_teleservices": stubs.card_teleservices_url,
                "state": str(stubs.context.data_dir),
                "temporary": args.data is None,
                "pki": str(pki.directory),
                "ca_bundle": str(pki.ca_bundle),
            }
        )
    else:
        print(f"cisis-transport stub listening on {stubs.url}")
        for name in SERVICES:
            print(f"  {name:<17} {stubs.url}{service_path(name)}")
        print(f"  {'lps (card mode)':<17} {stubs.card_teleservices_url} (server-only TLS)")
        print(f"state in {stubs.context.data_dir}{'' if args.data else ' (temporary)'}")
        print(f"PKI in {pki.directory}; clients need a certificate from {pki.ca_bundle}")
        print("Ctrl-C stops")
    sys.stdout.flush()
    try:
        while not stopped.wait(1):
            pass
    finally:
        stubs.stop()
    if not as_json:
        print("stopped")
    return 0


def _pki(directory: Path) -> ExamplePKI:
    """The PKI of ``--pki DIR``, or UsageError naming what is missing."""
    from transport import examplepki

    if not directory.is_dir():
        raise UsageError(f"--pki {directory}: no such folder", hint="name an example PKI folder")
    pki = examplepki.load(directory)
    missing = [
        path.name for path in (pki.ca_bundle, pki.server_cert, pki.server_key) if not path.is_file()
    ]
    if missing:
        raise UsageError(
            f"--pki {directory}: missing {', '.join(missing)}",
            hint="name a folder made by examplepki.generate (or certs-example/)",
        )
    return pki
