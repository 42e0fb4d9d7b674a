"""DPRM margin: forecast-driven portfolio margin (pure computation)."""
