"""The engine: attacks every checkpoint over the epsilon grid and writes the record (floor 4)."""
