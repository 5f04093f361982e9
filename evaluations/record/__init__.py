"""The record: results schema and files, cells, metrics, budgets and security tables (floor 3)."""
