"""tmeter gateway: the community's trust anchor, the daemon and what it runs (ingest, market,
the interval cycle and settlement, ledger, operations). docs/architecture.md §2-§4 and §7-§10."""
