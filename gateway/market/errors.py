"""Errors the market raises on bad input: each names what is wrong and where.

The CLI turns every one of them into a one-line message and exit code 2; the gateway logs them
against the meter they name. None of them is ever a bug in the engine.
"""

from __future__ import annotations


class MarketInputError(ValueError):
    """Bids, community parameters or p2p parameters that cannot be cleared."""


class BidError(MarketInputError):
    """One bid is invalid; ``meter`` says whose, ``reason`` what is wrong with it."""

    def __init__(self, meter: str, reason: str, index: int | None = None) -> None:
        self.meter = meter
        self.reason = reason
        self.index = index
        where = f"bid #{index} " if index is not None else "bid "
        super().__init__(f"{where}{meter!r}: {reason}")


class InfeasibleMarket(MarketInputError):
    """No dispatch balances the community within the bids' ranges and the grid's limits."""
