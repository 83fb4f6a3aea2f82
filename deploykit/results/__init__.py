"""Results as data: one result and its run (result), the SQLite store and its checks (store, dbcheck,
stored_schema), merging shards (merge), summaries and the known-divergence table (summary, divergences),
comparing runs (compare, baseline), and what a run was measured on (environment)."""
