"""Hyperparameter searches on Ray Tune and experiment comparison from MLflow."""
