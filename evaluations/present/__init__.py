"""Presentation: figures and the report, read from the record (floor 4; never imports engine)."""
