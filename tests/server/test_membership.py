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
