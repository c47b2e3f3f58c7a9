"""Regenerate the example PKI (TEST MATERIAL, never for production).

Usage: python certs-example/generate.py [--out DIR] [--password P] [--days N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from transport import examplepki
except ImportError:
    # Run from a checkout without installing the package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from transport import examplepki

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    """Generate the set into --out (default: this folder) and list the files written."""
    parser = argparse.ArgumentParser(description="Generate the example IGC-Santé-like TEST PKI.")
    parser.add_argument(
        "--out", type=Path, default=HERE, help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--password",
        default=examplepki.DEFAULT_PASSWORD,
        help="PKCS#12 password (default: %(default)s)",
    )
    parser.add_argument(
        "--days", type=int, default=3650, help="leaf validity (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    pki = examplepki.generate(args.out, password=args.password, validity_days=args.days)
    print("TEST MATERIAL - never use in production; these private keys are public.")
    for path in pki.files():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
