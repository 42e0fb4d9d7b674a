"""DPRM features: canonical market data, realized measures, microstructure features, targets."""
