"""``python -m rbs`` entry point (also used by torchrun)."""

from rbs.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
