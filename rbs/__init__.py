"""The ``rbs`` command line: the composition root (argv -> one library call per subcommand).

Nothing in ``attacks``, ``robustbench_sparse`` or ``evaluations`` imports this package.
"""
