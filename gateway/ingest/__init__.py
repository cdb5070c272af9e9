"""Ingest: meters' messages in, verified records stored, acks out."""
