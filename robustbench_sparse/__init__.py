"""robustbench-sparse: Campfire structured-sparse training and adversarial-robustness measurement."""

__version__ = "0.1.0"

__all__ = ["__version__"]
