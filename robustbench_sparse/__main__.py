"""``python -m robustbench_sparse`` entry point (also used by torchrun)."""

from robustbench_sparse.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
