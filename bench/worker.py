"""``cloudops worker`` with the bench's one-step handler: ``python -m bench.worker`` reads
the same CLOUDOPS_* settings (CLOUDOPS_BUS=postgres) as ``cloudops worker``."""

from __future__ import annotations

import sys

from bench.handlers import patch_runtime


def main() -> int:
    patch_runtime()
    from cloudops.cli import main as cloudops_main

    return cloudops_main(["worker", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
