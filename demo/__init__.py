"""The demo: sample warehouse data and ``make demo``."""
