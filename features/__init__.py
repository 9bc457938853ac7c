"""Real-time features in Redis (profiles, user state, item upserts, decayed popularity) and the
durable event log. One code path for an embedded redis-server, an external Redis and Redis Cluster.

Modules: `redis_conn` (open_redis), `keys` (key layout), `store` (FeatureStore), `decay`
(forward-decayed counters), `eventlog` (EventLog; its export into a data folder is
offline_training/export.py). Nothing is imported here, so importing the package starts nothing and
loads no optional dependency.
"""
