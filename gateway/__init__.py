"""tmeter gateway: the community's trust anchor (ingest, market, settlement, ledger) and the host CLI."""
