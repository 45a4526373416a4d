"""Batch restoration on Ray: storage (local and S3), the driver and worker, MLflow records.

Nothing here imports ray, mlflow or boto3 at module import time: the command line stays fast
and `knitwork fit` works without them.
"""
