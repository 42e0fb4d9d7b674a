"""DPRM models: volatility and correlation forecasters, evaluation and registry."""
