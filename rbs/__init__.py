"""The ``rbs`` command line: the composition root (argv -> one library call per subcommand).

Nothing in ``attacks``, ``robustbench_sparse`` or ``evaluations`` imports this package.
"""

# Imported first, before torch: the automatic thread choice measures the machine from here to the
# moment the subcommand starts (robustbench_sparse.threads).
from robustbench_sparse import threads as _threads  # noqa: F401
