"""pipeline.cluster on real Ray: local loopback-only clusters, joining a named one, sizing.

Tests that start or join clusters of their own run in subprocesses (so the session's in-process
`ray_cluster` fixture is never disturbed), each with its own Ray temp dir and HOME, and check
that no process of theirs is left behind.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from knitwork.config import Config
from pipeline.cluster import (
    PROBE_SECONDS,
    START_HINT,
    ClusterError,
    ClusterOptions,
    connect,
    in_flight_limit,
    local_cluster_environment,
    pin_to_cpu,
    required_environment,
    share_memory,
    submit_all,
    task_options,
)
from pipeline.storage import StorageError
from tests.pipeline.cluster_support import (
    RUN_LOCAL,
    _alive,
    assert_nothing_left,
    current_cluster_file,
    is_loopback,
    processes_of,
    run,
    short_temp_dir,
    stop,
    user_env,
)
from tests.services import free_port


@pytest.fixture
def ray_tmp():
    folder = short_temp_dir("kwray")
    yield folder
    assert_nothing_left(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def live_cluster():
    """A cluster started with `ray start` on 127.0.0.1 (1 CPU), as a user would: its address,
    and its temp dir (whose ray_current_cluster names it)."""
    folder = short_temp_dir("kwlive")
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "1",
        "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(folder),
    ]  # fmt: skip
    env = user_env(folder) | local_cluster_environment()
    with (folder / "start.log").open("w") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (folder / "ray_current_cluster").exists():
            assert proc.poll() is None and time.monotonic() < deadline, (
                folder / "start.log"
            ).read_text()
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", folder
    finally:
        # `ray start --block` stops (and reaps) its own processes on SIGTERM; then the rest.
        family = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        stop([p for p in family if _alive(p)] + processes_of(folder))
        assert_nothing_left(folder)
        shutil.rmtree(folder, ignore_errors=True)


def test_local_cluster_listens_on_loopback_only_and_has_no_dashboard(ray_tmp):
    script = """
with connect(ClusterOptions()) as ray:
    assert ray.get(ray.remote(lambda: 1).remote()) == 1  # a worker is up and listening
    me = psutil.Process()
    listeners = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            cmd = " ".join(proc.cmdline())[:160]
            for c in proc.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    listeners.append([proc.name(), c.laddr.ip, c.laddr.port, cmd])
        except psutil.Error:
            pass
    nodes = [node["NodeManagerAddress"] for node in ray.nodes()]
report(listeners=listeners, nodes=nodes)
"""
    env = user_env(ray_tmp) | local_cluster_environment()
    result = run(script, env, ray_tmp)
    listeners = result["listeners"]
    assert result["nodes"] == ["127.0.0.1"]
    assert {"gcs_server", "raylet"} <= {name for name, *_ in listeners}, listeners
    outside = [row for row in listeners if not is_loopback(row[1])]
    assert not outside, f"listening beyond loopback: {outside}"
    dashboards = [row for row in listeners if row[2] == 8265 or "dashboard" in row[3].lower()]
    assert not dashboards, dashboards


def test_local_cluster_is_refused_without_its_environment(ray_tmp):
    script = """
messages = {}
cases = [("local", ClusterOptions()), ("loopback", ClusterOptions(address="127.0.0.1:6379"))]
for name, options in cases:
    try:
        with connect(options):
            messages[name] = "connected"
    except ClusterError as err:
        messages[name] = str(err)
import ray
report(messages=messages, initialized=ray.is_initialized())
"""
    result = run(script, user_env(ray_tmp), ray_tmp)
    assert not result["initialized"]
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in result["messages"]["local"]
    assert "RAY_AUTH_MODE=disabled" in result["messages"]["local"]
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in result["messages"]["loopback"]


def test_stale_current_cluster_file_does_not_stop_a_local_run(ray_tmp):
    current_cluster_file(ray_tmp).write_text("127.0.0.1:1")  # plain ray.init() would join it
    result = run(RUN_LOCAL, user_env(ray_tmp) | local_cluster_environment(), ray_tmp)
    assert result["trap"] == "127.0.0.1:1"
    assert result["task"] == 4
    assert result["gcs"].startswith("127.0.0.1:") and result["gcs"] != "127.0.0.1:1"


@pytest.mark.parametrize("named_as", ["host:port", "auto"])
def test_a_running_cluster_is_joined_when_named(live_cluster, ray_tmp, named_as):
    address, folder = live_cluster
    if named_as == "auto":  # "the machine's running cluster": the one Ray's temp dir names
        shutil.copy(folder / "ray_current_cluster", current_cluster_file(ray_tmp))
    name = address if named_as == "host:port" else "auto"
    script = f"""
with connect(ClusterOptions(address={name!r})) as ray:
    gcs = ray.get_runtime_context().gcs_address
    nodes = [node["NodeID"] for node in ray.nodes()]
    ran_on = ray.get(ray.remote(lambda: ray.get_runtime_context().get_node_id()).remote())
report(gcs=gcs, nodes=nodes, ran_on=ran_on)
"""
    env = user_env(ray_tmp, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    result = run(script, env, ray_tmp)
    assert result["gcs"] == address
    assert result["nodes"] == [result["ran_on"]]


def test_a_running_cluster_is_not_joined_when_not_named(live_cluster, ray_tmp):
    address, folder = live_cluster
    # The trap of plain ray.init(): Ray's temp dir names the running cluster.
    shutil.copy(folder / "ray_current_cluster", current_cluster_file(ray_tmp))
    assert current_cluster_file(ray_tmp).read_text().strip() == address
    result = run(RUN_LOCAL, user_env(ray_tmp) | local_cluster_environment(), ray_tmp)
    assert result["trap"] == address
    assert result["task"] == 4
    assert result["gcs"] != address


def test_joining_leaves_the_environment_as_it_was(live_cluster, ray_tmp):
    address, _ = live_cluster
    script = """
import ray  # importing ray itself writes RAY_CLIENT_MODE=0 into os.environ: not our doing

def changes(before, now):
    keys = set(before) | set(now)
    return {k: [before.get(k), now.get(k)] for k in keys if before.get(k) != now.get(k)}

before = dict(os.environ)
with connect(ClusterOptions()) as ray:  # the address comes from RAY_ADDRESS
    during = changes(before, dict(os.environ))
    gcs = ray.get_runtime_context().gcs_address
    assert ray.get(ray.remote(lambda: 1).remote()) == 1
report(gcs=gcs, during=during, after=changes(before, dict(os.environ)))
"""
    env = user_env(ray_tmp, RAY_ADDRESS=address, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    result = run(script, env, ray_tmp)
    assert result["gcs"] == address
    assert result["during"] == {} and result["after"] == {}


def test_an_unreachable_address_fails_fast_with_what_to_do(ray_tmp):
    script = """
start = time.monotonic()
try:
    with connect(ClusterOptions(address="127.0.0.1:1")):
        message = "connected"
except ClusterError as err:
    message = str(err)
report(message=message, seconds=time.monotonic() - start)
"""
    env = user_env(ray_tmp, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    result = run(script, env, ray_tmp)
    assert "127.0.0.1:1" in result["message"] and START_HINT in result["message"]
    assert result["seconds"] < PROBE_SECONDS + 5


def test_required_environment_follows_the_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert required_environment(ClusterOptions()) == local_cluster_environment()
    loopback = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    assert required_environment(ClusterOptions(address="127.0.0.1:6379")) == loopback
    assert required_environment(ClusterOptions(address="localhost:6379")) == loopback
    assert required_environment(ClusterOptions(address="auto")) == loopback
    assert required_environment(ClusterOptions(address="10.1.2.3:6379")) == {}
    assert required_environment(ClusterOptions(address="ray://head:10001")) == {}
    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6379")
    assert required_environment(ClusterOptions()) == {}


def test_connect_reuses_the_ray_already_running(ray_cluster):
    with connect(ClusterOptions(address="127.0.0.1:1")) as ray:  # not even tried
        assert ray is ray_cluster
    assert ray_cluster.is_initialized()


def test_more_cpus_per_task_than_a_node_has_is_refused(ray_cluster):
    with pytest.raises(ClusterError, match=r"asks 3 CPUs per task but the largest node .* has 2"):
        task_options(ray_cluster, ClusterOptions(cpus_per_task=3))


def test_more_memory_than_any_node_has_is_refused_and_auto_is_shared(ray_cluster):
    config = Config()
    huge = config.replace(optim=dataclasses.replace(config.optim, max_memory="64T"))
    with pytest.raises(ClusterError, match=r"--max-memory 64T is more than any node"):
        share_memory(ray_cluster, ClusterOptions(), huge)
    small = config.replace(optim=dataclasses.replace(config.optim, max_memory="1G"))
    assert share_memory(ray_cluster, ClusterOptions(), small) == small
    shared = share_memory(ray_cluster, ClusterOptions(), config).optim.max_memory
    assert shared.endswith("M") and int(shared[:-1]) > 0


def test_task_options_fit_a_cpu_cluster(ray_cluster, capsys):
    options = ClusterOptions(cpus_per_task=2, gpus_per_task=0.5, max_retries=1)
    resources = task_options(ray_cluster, options)
    assert resources == {
        "num_cpus": 2,
        "num_gpus": 0.0,
        "max_retries": 1,
        "retry_exceptions": [StorageError],
    }
    assert "0.5 GPUs per task asked for" in capsys.readouterr().err
    assert in_flight_limit(ray_cluster, ClusterOptions()) == 4
    assert in_flight_limit(ray_cluster, ClusterOptions(max_in_flight=3)) == 3


class Counted:
    """A remote function that counts what is submitted and not yet handed back."""

    def __init__(self, remote) -> None:
        self.inner, self.outstanding, self.most = remote, 0, 0

    def remote(self, item):
        self.outstanding += 1
        self.most = max(self.most, self.outstanding)
        return self.inner.remote(item)


def test_submit_all_bounds_in_flight_and_hands_back_every_result(ray_cluster):
    def square(item: int) -> int:
        if item == 3:
            raise ValueError("three")
        return item * item

    remote = Counted(ray_cluster.remote(square).options(max_retries=0))
    seen: dict[int, object] = {}

    def on_done(item, result, error):
        remote.outstanding -= 1
        seen[item] = error if error is not None else result

    submit_all(ray_cluster, remote, range(7), 2, on_done)
    assert remote.most == 2
    assert {k: v for k, v in seen.items() if k != 3} == {i: i * i for i in (0, 1, 2, 4, 5, 6)}
    assert isinstance(seen[3], ValueError) and "three" in str(seen[3])


def test_pin_to_cpu_only_without_gpus():
    config = Config()
    assert config.optim.device == "auto"
    assert pin_to_cpu(config, 0).optim.device == "cpu"
    assert pin_to_cpu(config, 0.5) is config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cpus_per_task": 0}, "--cpus-per-task must be > 0; got 0"),
        ({"cpus_per_task": float("nan")}, "--cpus-per-task must be > 0"),
        ({"gpus_per_task": -1}, "--gpus-per-task must be >= 0; got -1"),
        ({"max_in_flight": 0}, "--max-in-flight must be >= 1 when given; got 0"),
        ({"max_retries": -1}, "--max-retries must be >= 0; got -1"),
    ],
)
def test_options_are_validated(changes, message):
    with pytest.raises(ValueError, match=message.replace("-", r"\-")):
        ClusterOptions(**changes)


def test_options_are_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        ClusterOptions("127.0.0.1:6379")  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ClusterOptions().address = "auto"  # type: ignore[misc]


def test_auto_memory_is_shared_between_the_tasks_a_node_runs(ray_cluster):
    config = Config()
    node = next(n["Resources"] for n in ray_cluster.nodes() if n["Alive"])
    one = share_memory(ray_cluster, ClusterOptions(cpus_per_task=1), config)
    two = share_memory(ray_cluster, ClusterOptions(cpus_per_task=2), config)
    assert one.optim.max_memory == f"{int(node['memory'] / 2) // 2**20}M"  # 2 tasks at once
    assert two.optim.max_memory == f"{int(node['memory']) // 2**20}M"  # 1 task at once
    fixed = config.replace(optim=dataclasses.replace(config.optim, max_memory="3G"))
    assert share_memory(ray_cluster, ClusterOptions(), fixed).optim.max_memory == "3G"
