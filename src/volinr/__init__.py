"""volinr: a reproducible benchmark of INR compression for medical volumes."""

__version__ = "0.1.0"
