"""``python -m ppl``: the command line (see :mod:`ppl.cli` and docs/cli.md)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
