"""MLflow records (a real sqlite store): what they keep never holds a password or secret key."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from pipeline.tracking import Tracker

SECRET = "s3cr3t-Pa55"


def test_params_and_tags_are_recorded_without_credentials(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "tests")
    endpoint = f"http://ann:{SECRET}@minio:9000"
    parent = tracker.start({"endpoint": endpoint, "steps": "3"}, {"batch": f"in → {endpoint}"})
    assert parent is not None, tracker.problem
    child = tracker.log_child("one.png", {"source": endpoint}, {"x": endpoint}, [], {}, {})
    client = MlflowClient(tracking_uri=uri)
    for run_id in (parent, child):
        data = client.get_run(run_id).data
        assert SECRET not in repr(data.params) + repr(data.tags)
    data = client.get_run(parent).data
    assert data.params["endpoint"] == "http://ann:***@minio:9000" and data.params["steps"] == "3"
    assert client.get_run(child).data.tags["source"] == "http://ann:***@minio:9000"
