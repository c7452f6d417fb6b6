import math
import os
import time

import pytest

from trietcd.metrics import CONTENT_TYPE, Registry, format_float


@pytest.mark.parametrize(
    "value, text",
    [
        (0, "0"), (1, "1"), (-1, "-1"), (0.05, "0.05"), (20000, "20000"), (123456, "123456"),
        (1e6, "1e+06"), (30519296, "3.0519296e+07"), (1795500649.26, "1.79550064926e+09"),
        (2.0**64 - 1, "1.8446744073709552e+19"), (0.0001, "0.0001"), (1e-05, "1e-05"),
        (0.004784492, "0.004784492"), (2.048, "2.048"), (-2.5, "-2.5"), (1.5e-7, "1.5e-07"),
        (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"),
    ],
)
def test_format_float_like_go(value, text):
    assert format_float(value) == text


def test_render_counters_gauges_sorted_with_escaping():
    reg = Registry()
    c = reg.counter("zeta_total", "Last family.\nSecond line \\ slash.", ["method", "code"])
    c.labels("PUT", "200").inc()
    c.labels("GET", '"quoted"\n').inc(2)
    g = reg.gauge("alpha", "First family.")
    g.set(3)
    g.inc(0.5)
    reg.gauge("unused", "Labelled families without samples are omitted.", ["x"])
    assert reg.render().decode() == (
        "# HELP alpha First family.\n"
        "# TYPE alpha gauge\n"
        "alpha 3.5\n"
        "# HELP zeta_total Last family.\\nSecond line \\\\ slash.\n"
        "# TYPE zeta_total counter\n"
        'zeta_total{method="GET",code="\\"quoted\\"\\n"} 2\n'
        'zeta_total{method="PUT",code="200"} 1\n'
    )


def test_histogram_buckets_sum_count():
    reg = Registry()
    h = reg.histogram("etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL.",
                      buckets=[0.001 * 2**i for i in range(3)])
    for v in (0.0005, 0.001, 0.003, 10):
        h.observe(v)
    assert reg.render().decode() == (
        "# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL.\n"
        "# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n"
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 2\n'
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"} 2\n'
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.004"} 3\n'
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 4\n'
        "etcd_disk_wal_fsync_duration_seconds_sum 10.0045\n"
        "etcd_disk_wal_fsync_duration_seconds_count 4\n"
    )


def test_labelled_histogram_puts_le_last():
    reg = Registry()
    h = reg.histogram("h", "h.", ["type"], buckets=[1])
    h.labels("a").observe(2)
    assert 'h_bucket{type="a",le="1"} 0' in reg.render().decode()
    assert 'h_sum{type="a"} 2' in reg.render().decode()


def test_unlabelled_metrics_start_at_zero():
    reg = Registry()
    reg.counter("c_total", "c.")
    reg.histogram("h", "h.", buckets=[1])
    assert reg.render().decode() == (
        "# HELP c_total c.\n# TYPE c_total counter\nc_total 0\n"
        '# HELP h h.\n# TYPE h histogram\nh_bucket{le="1"} 0\nh_bucket{le="+Inf"} 0\nh_sum 0\nh_count 0\n')


def test_gauge_function_and_misuse():
    reg = Registry()
    g = reg.gauge("g", "g.")
    g.set_function(lambda: 7)
    assert reg.render().endswith(b"g 7\n")
    with pytest.raises(AssertionError):
        reg.gauge("g", "again")
    with pytest.raises(AssertionError):
        reg.counter("c", "c.").inc(-1)
    with pytest.raises(AssertionError):
        reg.counter("l", "l.", ["a"]).inc()


def test_process_metrics_are_plausible():
    reg = Registry(process=True)
    text = reg.render().decode()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if not line.startswith("#")}
    assert set(values) == {
        "process_cpu_seconds_total", "process_max_fds", "process_open_fds", "process_resident_memory_bytes",
        "process_start_time_seconds", "process_virtual_memory_bytes", "process_virtual_memory_max_bytes",
    }
    assert values["process_open_fds"] >= 3
    assert values["process_max_fds"] >= values["process_open_fds"]
    assert values["process_resident_memory_bytes"] > 1 << 20
    assert values["process_virtual_memory_bytes"] >= values["process_resident_memory_bytes"]
    # The process started before now and after the machine booted (a day is generous for a test run).
    assert time.time() - 86400 < values["process_start_time_seconds"] <= time.time() + 1
    assert values["process_cpu_seconds_total"] > 0
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        again = {l.split()[0]: float(l.split()[1]) for l in reg.render().decode().splitlines() if l[0] != "#"}
        assert again["process_open_fds"] == values["process_open_fds"] + 1
    finally:
        os.close(fd)


def test_content_type():
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_default_registry_is_shared_and_has_process_metrics():
    from trietcd.metrics import default_registry

    assert default_registry() is default_registry()
    assert b"process_open_fds " in default_registry().render()


def test_exponential_buckets_like_client_golang():
    from trietcd.metrics import DISK_BUCKETS, exponential_buckets

    assert exponential_buckets(1, 2, 4) == (1, 2, 4, 8)
    assert [format_float(b) for b in DISK_BUCKETS] == [
        "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512", "1.024",
        "2.048", "4.096", "8.192"]


def test_collector_renders_at_scrape_time_sorted():
    reg = Registry()
    rows = []
    reg.collector("c_total", "c.", "counter", ["a", "b"], lambda: rows)
    assert reg.render() == b""  # no sample, no family
    rows += [(("y", "1"), 2), (("x", "2"), 1)]
    assert reg.render().decode() == (
        '# HELP c_total c.\n# TYPE c_total counter\nc_total{a="x",b="2"} 1\nc_total{a="y",b="1"} 2\n')


def test_server_metrics_cluster_version_is_major_minor_once_decided():
    from trietcd.metrics import ServerMetrics

    reg = Registry()
    m = ServerMetrics(reg)
    assert b"etcd_cluster_version" not in reg.render()
    m.cluster_version_function = lambda: "3.5.0"
    assert b'etcd_cluster_version{cluster_version="3.5"} 1\n' in reg.render()
    m.ranges_applied = 2
    m.ranges_served = lambda: 3
    assert b"etcd_mvcc_range_total 5\n" in reg.render()


def test_grpc_families_from_call_counters():
    from trietcd.metrics import register_grpc_metrics
    from trietcd.wire.conn import GrpcStats

    class Method:
        path, client_streaming, server_streaming = "/etcdserverpb.Lock/Lock", False, False

    stats = GrpcStats()
    stats.register("/etcdserverpb.KV/Put", False, False)
    stats.register("/etcdserverpb.Watch/Watch", True, True)
    lock = stats.of(Method())
    lock.started += 1
    lock.handled[4] += 1  # DeadlineExceeded
    stats.received_bytes = 18
    reg = Registry()
    register_grpc_metrics(reg, stats)
    register_grpc_metrics(reg, stats)  # once per registry
    text = reg.render().decode()
    assert 'grpc_server_started_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 0' in text
    assert 'grpc_server_started_total{grpc_method="Lock",grpc_service="etcdserverpb.Lock",grpc_type="unary"} 1' in text
    handled = [line for line in text.splitlines() if line.startswith("grpc_server_handled_total{")]
    # Registered methods at zero for all 17 codes; a method first seen in a call, with the codes it saw.
    assert len(handled) == 2 * 17 + 1
    assert ('grpc_server_handled_total{grpc_code="DeadlineExceeded",grpc_method="Lock",'
            'grpc_service="etcdserverpb.Lock",grpc_type="unary"} 1') in handled
    assert "etcd_network_client_grpc_received_bytes_total 18\n" in text


def test_grpc_handling_seconds_when_timed():
    from trietcd.metrics import register_grpc_metrics
    from trietcd.wire.conn import GrpcStats, _observe_handling

    stats = GrpcStats()
    stats.register("/etcdserverpb.KV/Put", False, False)
    stats.register("/etcdserverpb.KV/Range", False, False)
    stats.time_handling([0.1, 1])
    put = stats.methods["/etcdserverpb.KV/Put"]
    for seconds in (0.05, 0.1, 0.5, 3):
        _observe_handling(put, stats.handling_buckets, seconds)
    reg = Registry()
    register_grpc_metrics(reg, stats)
    text = reg.render().decode()
    labels = 'grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"'
    assert (f'grpc_server_handling_seconds_bucket{{{labels},le="0.1"}} 2\n'
            f'grpc_server_handling_seconds_bucket{{{labels},le="1"}} 3\n'
            f'grpc_server_handling_seconds_bucket{{{labels},le="+Inf"}} 4\n'
            f'grpc_server_handling_seconds_sum{{{labels}}} 3.65\n'
            f'grpc_server_handling_seconds_count{{{labels}}} 4\n') in text
    assert 'grpc_server_handling_seconds_count{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 0' in text
    untimed = Registry()
    register_grpc_metrics(untimed, GrpcStats())
    assert untimed.get("grpc_server_handling_seconds") is None
