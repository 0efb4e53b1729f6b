"""``cloudops serve`` with the bench's one-step handler: ``python -m bench.serve [--port P]
[--no-worker]`` takes the same arguments and CLOUDOPS_* settings as ``cloudops serve``."""

from __future__ import annotations

import sys

from bench.handlers import patch_runtime


def main() -> int:
    patch_runtime()
    from cloudops.cli import main as cloudops_main

    return cloudops_main(["serve", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
