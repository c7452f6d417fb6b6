from trietcd.server.membership import Membership, compute_cluster_id, compute_member_id


def test_default_member_and_cluster_ids_match_etcd():
    # Observed from etcd 3.5.1 started with no flags: member 8e9e05c52164694d,
    # cluster cdf818194e3a8c32.
    m = Membership.bootstrap(
        name="default",
        initial_cluster={"default": ("http://localhost:2380",)},
        cluster_token="etcd-cluster",
        client_urls=("http://localhost:2379",),
    )
    assert m.local_id == 0x8E9E05C52164694D
    assert m.cluster_id == 0xCDF818194E3A8C32
    assert m.local.client_urls == ("http://localhost:2379",)


def test_member_id_ignores_url_order_and_depends_on_token():
    a = compute_member_id(["http://b:2380", "http://a:2380"], "tok")
    assert a == compute_member_id(["http://a:2380", "http://b:2380"], "tok")
    assert a != compute_member_id(["http://a:2380", "http://b:2380"], "other")
    assert a != compute_member_id(["http://a:2380", "http://b:2380"], "tok", now_unix=1)


def test_three_members_sorted_and_cluster_id_order_free():
    cluster = {
        "n1": ("http://127.0.0.1:1",),
        "n2": ("http://127.0.0.1:2",),
        "n3": ("http://127.0.0.1:3",),
    }
    m = Membership.bootstrap(name="n2", initial_cluster=cluster, cluster_token="t", client_urls=())
    ids = [info.id for info in m.sorted_members()]
    assert ids == sorted(ids) and len(ids) == 3
    assert m.local.name == "n2"
    assert m.cluster_id == compute_cluster_id(reversed(ids))


# Texts observed from etcd 3.5.1 started with the same flags.
import pytest  # noqa: E402

from trietcd.server.errors import BootstrapError  # noqa: E402
from trietcd.server.membership import verify_bootstrap  # noqa: E402

P = "http://127.0.0.1:23811"


def _cluster_map(text: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for item in text.split(","):
        name, _, url = item.partition("=")
        out.setdefault(name, []).append(url)
    return {k: tuple(sorted(v)) for k, v in out.items()}


@pytest.mark.parametrize(
    "name, cluster, advertise, message",
    [
        ("x", f"y={P}", (P,), 'couldn\'t find local name "x" in the initial cluster configuration'),
        (
            "x", "x=http://127.0.0.1:9999", (P,),
            f'--initial-cluster has x=http://127.0.0.1:9999 but missing from --initial-advertise-peer-urls={P} '
            f'("{P}"(resolved from "{P}") != "http://127.0.0.1:9999"(resolved from "http://127.0.0.1:9999"))',
        ),
        ("x", f"x={P},y={P}", (P,), f"initial cluster x={P},y={P} has duplicate url"),
        (
            "x", f"x={P},x={P}", (P,),
            f'failed to resolve {P} to match --initial-cluster=x={P} (len(["{P}"]) != len(["{P}" "{P}"]))',
        ),
        (
            "x", f"x={P}", (P, "http://127.0.0.1:1"),
            f"--initial-advertise-peer-urls has http://127.0.0.1:1 but missing from "
            f"--initial-cluster=x=http://127.0.0.1:1,x={P}",
        ),
    ],
)
def test_bootstrap_errors_read_like_etcd(name, cluster, advertise, message):
    with pytest.raises(BootstrapError) as info:
        verify_bootstrap(name=name, initial_cluster=cluster, initial_cluster_map=_cluster_map(cluster),
                         advertise_peer_urls=advertise, resolve=lambda url: url)
    assert str(info.value) == message


def test_hostnames_that_resolve_to_the_same_address_match():
    resolve = {"http://localhost:2380": "http://127.0.0.1:2380"}.get
    verify_bootstrap(name="n", initial_cluster="n=http://127.0.0.1:2380",
                     initial_cluster_map={"n": ("http://127.0.0.1:2380",)},
                     advertise_peer_urls=("http://localhost:2380",),
                     resolve=lambda url: resolve(url, url))
