"""Training data, training, export and report of the quality predictor (not shipped)."""
