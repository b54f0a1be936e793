"""``tessera pki …``: make and rotate the internal CA and every certificate (``shared.pki``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shared.pki import (
    CA_FILE,
    IDENTITIES,
    PREVIOUS_CA_FILE,
    finish_rotation,
    init_pki,
    rotate_pki,
)
from shared.service import fail


def cmd_pki_init(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    try:
        init_pki(directory)
    except FileExistsError as exc:
        fail(str(exc))
    print(f"internal CA and certificates for {', '.join(IDENTITIES)} in {directory}")
    return 0


def cmd_pki_rotate(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if args.finish:
        if not (directory / PREVIOUS_CA_FILE).exists():
            fail(f"no rotation in progress in {directory} ({PREVIOUS_CA_FILE} is missing)")
        finish_rotation(directory)
        print(f"{directory / CA_FILE} now trusts only the current CA")
        return 0
    if (directory / PREVIOUS_CA_FILE).exists():
        fail(f"a rotation is in progress in {directory}: finish it first (--finish)")
    try:
        rotate_pki(directory)
    except FileNotFoundError as exc:
        fail(f"no CA to rotate: {exc.filename} is missing (`tessera pki init` first)")
    print(
        f"new CA in {directory}: {CA_FILE} trusts both CAs and every certificate is re-issued;"
        " once every service has picked up its new files, run `tessera pki rotate --finish"
        f" {directory}`"
    )
    return 0


def register(sub: Any) -> None:
    pki = sub.add_parser("pki", help="the internal CA and certificates").add_subparsers(
        dest="pki_command", required=True
    )
    init = pki.add_parser("init", help="make the CA and a certificate per service and operator")
    init.add_argument("directory", metavar="DIR")
    init.set_defaults(func=cmd_pki_init)
    rotate = pki.add_parser("rotate", help="a new CA, trusted alongside the old one until --finish")
    rotate.add_argument("directory", metavar="DIR")
    rotate.add_argument(
        "--finish", action="store_true", help="end the overlap: trust only the new CA"
    )
    rotate.set_defaults(func=cmd_pki_rotate)
