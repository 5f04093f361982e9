"""Evaluation: the robustness grid and what it leaves behind, in three floors.

``engine`` (grid, protocols, masking probes) writes ``record`` (results schema, cells, metrics,
budgets, security tables), which ``present`` (figures, report) reads. ``engine`` and ``present``
never import each other; see docs/ARCHITECTURE.md, "The floors".
"""
