"""The ledger: an RFC 6962 Merkle log of every record, signed checkpoints, verification."""
