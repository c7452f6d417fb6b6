"""/metrics of trietcd against etcd 3.5.1 after the same etcdctl workload: the same families (name, type, HELP,
label names), the same histogram buckets, the same gRPC methods exported, and values that follow the workload."""

from __future__ import annotations

import re
import urllib.request

import pytest

from tests.e2e.servers import free_port

FAMILIES = [
    "etcd_server_has_leader", "etcd_server_is_leader", "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total", "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending", "etcd_server_proposals_failed_total",
    "etcd_server_id", "etcd_server_version", "etcd_server_quota_backend_bytes", "etcd_cluster_version",
    "etcd_server_read_indexes_failed_total", "etcd_server_health_success", "etcd_server_health_failures",
    "etcd_server_slow_read_indexes_total", "etcd_server_is_learner", "etcd_server_heartbeat_send_failures_total",
    "etcd_server_snapshot_apply_in_progress_total", "os_fd_used", "os_fd_limit",
    "etcd_debugging_mvcc_watcher_total", "etcd_debugging_mvcc_watch_stream_total", "etcd_debugging_mvcc_slow_watcher_total",
    "etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_disk_wal_fsync_duration_seconds", "etcd_disk_backend_commit_duration_seconds",
    "etcd_debugging_mvcc_keys_total", "etcd_debugging_mvcc_current_revision", "etcd_debugging_mvcc_compact_revision",
    "etcd_mvcc_put_total", "etcd_mvcc_range_total", "etcd_mvcc_delete_total", "etcd_mvcc_txn_total",
    "etcd_network_client_grpc_received_bytes_total", "etcd_network_client_grpc_sent_bytes_total",
    "etcd_server_client_requests_total",
    "grpc_server_started_total", "grpc_server_handled_total", "grpc_server_msg_received_total",
    "grpc_server_msg_sent_total",
    "process_cpu_seconds_total", "process_max_fds", "process_open_fds", "process_resident_memory_bytes",
    "process_start_time_seconds", "process_virtual_memory_bytes", "process_virtual_memory_max_bytes",
]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(url: str) -> dict:
    """{family: {"type", "help", "samples": [(sample name, {label: value}, value)]}}"""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = response.read().decode()
    families: dict = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            families.setdefault(name, {"samples": []})["help"] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            families.setdefault(name, {"samples": []})["type"] = kind
        elif line and not line.startswith("#"):
            m = _SAMPLE.match(line)
            assert m, line
            sample, labels, value = m.groups()
            family = sample
            for suffix in ("_bucket", "_sum", "_count"):
                if sample.endswith(suffix) and sample[: -len(suffix)] in families:
                    family = sample[: -len(suffix)]
            families[family]["samples"].append((sample, dict(_LABEL.findall(labels or "")), float(value)))
    return families


def shape(families: dict, name: str):
    fam = families[name]
    labelsets = {tuple(sorted(k for k in labels if k != "le")) for _, labels, _ in fam["samples"]}
    return fam["type"], fam["help"], labelsets


def buckets(families: dict, name: str) -> list[str]:
    return [labels["le"] for sample, labels, _ in families[name]["samples"] if sample.endswith("_bucket")]


def value(families: dict, name: str, **labels) -> float:
    family = name if name in families else re.sub(r"_(count|sum)$", "", name)
    found = [v for sample, l, v in families[family]["samples"]
             if sample == name and all(l.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def grpc_methods(families: dict) -> set:
    return {(l["grpc_service"], l["grpc_method"], l["grpc_type"])
            for _, l, _ in families["grpc_server_started_total"]["samples"]}


def workload(server) -> None:
    for args in (
        ("put", "a", "1"), ("put", "b", "2"), ("get", "a"), ("get", "", "--prefix"), ("del", "b"),
        ("lease", "grant", "60"), ("endpoint", "health"), ("endpoint", "status"),
    ):
        r = server.etcdctl(*args)
        assert r.returncode == 0, (args, r.stderr)
    r = server.etcdctl("txn", input="value(\"a\") = \"1\"\n\nput c 3\nget a\n\n\n")
    assert r.returncode == 0, r.stderr


@pytest.fixture
def scraped(trietcd, etcd):
    metrics_port = free_port()
    ours = trietcd("--listen-metrics-urls", f"http://127.0.0.1:{metrics_port}")
    theirs = etcd()
    for server in (ours, theirs):
        workload(server)
    return scrape(ours.client_url), scrape(theirs.client_url), scrape(f"http://127.0.0.1:{metrics_port}")


def test_families_have_etcds_names_types_help_and_labels(scraped):
    ours, theirs, _ = scraped
    for name in FAMILIES:
        assert name in theirs, f"{name} not served by etcd 3.5.1"
        assert name in ours, f"{name} missing"
        assert shape(ours, name) == shape(theirs, name), name


def test_histograms_have_etcds_buckets(scraped):
    ours, theirs, _ = scraped
    for name in ("etcd_disk_wal_fsync_duration_seconds", "etcd_disk_backend_commit_duration_seconds"):
        assert buckets(ours, name) == buckets(theirs, name)
        assert value(ours, name + "_count") > 0


def test_grpc_methods_exported_as_etcd_exports_them(scraped):
    ours, theirs, _ = scraped
    assert grpc_methods(ours) == grpc_methods(theirs)
    for fam in (ours, theirs):
        put = {"grpc_method": "Put", "grpc_service": "etcdserverpb.KV", "grpc_type": "unary"}
        assert value(fam, "grpc_server_started_total", **put) == 2
        assert value(fam, "grpc_server_handled_total", grpc_code="OK", **put) == 2
        assert value(fam, "grpc_server_handled_total", grpc_code="NotFound", **put) == 0
        assert value(fam, "grpc_server_msg_received_total", **put) == 2
        assert value(fam, "grpc_server_msg_sent_total", **put) == 2
        rng = {"grpc_method": "Range", "grpc_service": "etcdserverpb.KV", "grpc_type": "unary"}
        # Two gets, and endpoint health's get of "health".
        assert value(fam, "grpc_server_handled_total", grpc_code="OK", **rng) == 3
    assert value(ours, "etcd_network_client_grpc_received_bytes_total") > 0
    # etcdctl 3.5.1 sends client-api-version 3.5 with every call.
    assert ({tuple(sorted(l.items())): v for _, l, v in ours["etcd_server_client_requests_total"]["samples"]}
            == {tuple(sorted(l.items())): v for _, l, v in theirs["etcd_server_client_requests_total"]["samples"]})


def test_values_follow_the_workload(scraped):
    ours, theirs, _ = scraped
    for fam in (ours, theirs):
        assert value(fam, "etcd_server_has_leader") == 1
        assert value(fam, "etcd_server_is_leader") == 1
        assert value(fam, "etcd_server_leader_changes_seen_total") == 1
        assert value(fam, "etcd_server_proposals_pending") == 0
        assert value(fam, "etcd_server_proposals_applied_total") == value(fam, "etcd_server_proposals_committed_total")
        assert value(fam, "etcd_debugging_mvcc_keys_total") == 2  # a and c; b was deleted
        assert value(fam, "etcd_debugging_mvcc_current_revision") == 5
        assert value(fam, "etcd_mvcc_put_total") == 3  # two puts, one in the txn
        assert value(fam, "etcd_mvcc_delete_total") == 1
        assert value(fam, "etcd_mvcc_txn_total") == 1  # the txn ran two operations
        assert value(fam, "etcd_server_version", server_version="3.5.1") == 1
        assert value(fam, "etcd_cluster_version", cluster_version="3.5") == 1
        assert value(fam, "etcd_server_quota_backend_bytes") == 2 * 1024**3
        assert value(fam, "etcd_server_is_learner") == 0
        assert value(fam, "etcd_debugging_mvcc_watcher_total") == 0  # etcdctl's watches are gone
        assert value(fam, "os_fd_limit") >= value(fam, "os_fd_used") > 3
        assert value(fam, "etcd_mvcc_db_total_size_in_bytes") >= value(fam, "etcd_mvcc_db_total_size_in_use_in_bytes") > 0
    # Ranges: two Range calls, endpoint status' none, the txn's get (etcd also counts internal reads).
    assert value(ours, "etcd_mvcc_range_total") >= 3


def test_metrics_listener_serves_the_same_families(scraped):
    ours, _, metrics_port = scraped
    assert set(metrics_port) == set(ours)


def test_extensive_adds_grpc_handling_seconds_as_etcd(trietcd, etcd):
    ours, theirs = trietcd("--metrics", "extensive"), etcd("--metrics", "extensive")
    for server in (ours, theirs):
        assert server.etcdctl("put", "a", "1").returncode == 0
    ours, theirs = scrape(ours.client_url), scrape(theirs.client_url)
    name = "grpc_server_handling_seconds"
    assert shape(ours, name) == shape(theirs, name)
    put = {"grpc_method": "Put", "grpc_service": "etcdserverpb.KV", "grpc_type": "unary"}
    for fam in (ours, theirs):
        assert value(fam, name + "_count", **put) == 1
        assert value(fam, name + "_count", grpc_method="Range", grpc_service="etcdserverpb.KV",
                     grpc_type="unary") == 0
    assert ({l["le"] for _, l, _ in ours[name]["samples"] if "le" in l}
            == {l["le"] for _, l, _ in theirs[name]["samples"] if "le" in l})
    methods = lambda fam: {(l["grpc_service"], l["grpc_method"]) for _, l, _ in fam[name]["samples"]}
    assert methods(ours) == methods(theirs)
