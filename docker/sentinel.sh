#!/bin/sh
# One Redis Sentinel of the compose profile "sentinel": watches the master `redis` (quorum 2
# of 3), fails over to a replica (`redis-replica-1`, `redis-replica-2`) when it is down for 5 s. Sentinel rewrites its own
# configuration, so it starts from a copy.
set -eu
conf=/tmp/sentinel.conf
cat >"$conf" <<CONF
port 26379
bind 0.0.0.0
protected-mode no
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel monitor stride redis 6379 2
sentinel down-after-milliseconds stride 5000
sentinel failover-timeout stride 30000
sentinel parallel-syncs stride 1
CONF
exec redis-server "$conf" --sentinel
