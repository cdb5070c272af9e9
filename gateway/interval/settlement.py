"""Settlement of one interval (docs/architecture.md §8), in integer micro-currency.

Each member is paid (positive) or pays (negative) the clearing price for its awarded net export,
plus the deviation between metered and awarded energy at the grid prices: more export (or less
import) than awarded is bought at the feed-in price, less at the retail import price. A
member's line is revision 0; a reading that arrives after settlement adds a revision carrying
only the difference, so nothing is ever rewritten and nothing is settled twice.

The members' lines are a bill: they add up, to the micro-unit, to what the community pays the
grid at its connection point (the feeder meter's energy, or the members' summed net position
without one) at the import and feed-in prices. What the award and deviation amounts leave over
(the community's deviations net out at the connection point, prices between the grid's, rounding)
is each member's ``share_amount``, split by the community's allocation rule with largest
remainders (protocols/money.py). Under a sharing rule (equal, proportional) a bidder's award is
not priced at all: it pays the share of the grid bill the clearing gave it, and nothing else. Shares wait until every member's reading of the interval is in,
since the grid bill covers the energy of all of them; a late reading settles them as a revision.

With a feeder meter at the connection point, the members' summed net import must equal the
feeder's within the loss tolerance; intervals that do not balance are flagged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from gateway.config import MarketConfig, SettlementConfig
from protocols import messages
from protocols.money import amount as money
from protocols.money import split


@dataclass(frozen=True)
class Award:
    q_wh: int  # awarded net export, + sells
    price: int  # micro-currency per kWh for the part not covered by trades
    trades: tuple[tuple[str, int, int], ...] = ()  # (peer, q_wh, price) for peer-to-peer
    # Under a sharing rule: the member's share of the grid bill (parts per million) its own
    # problem carried in the clearing; it then pays that share and nothing else.
    share_ppm: int | None = None

    def amount(self) -> int:
        traded = sum(q for _, q, _ in self.trades)
        return sum(money(q, p) for _, q, p in self.trades) + money(self.q_wh - traded, self.price)


@dataclass(frozen=True)
class Line:
    meter: str
    award_wh: int
    metered_wh: int | None  # net export from readings; None while no reading arrived
    award_amount: int
    deviation_amount: int
    share_amount: int = 0  # the member's part of what the grid bill leaves over (see above)

    @property
    def amount(self) -> int:
        return self.award_amount + self.deviation_amount + self.share_amount


def settle_member(meter: str, award: Award | None, metered_wh: int | None, market: MarketConfig) -> Line:
    award = award or Award(0, 0)
    if award.share_ppm is not None:  # its bill is its share of the grid bill (share_grid_bill)
        return Line(meter, award.q_wh, metered_wh, 0, 0)
    if metered_wh is None:
        return Line(meter, award.q_wh, None, award.amount(), 0)
    deviation = metered_wh - award.q_wh
    price = market.export_price if deviation > 0 else market.import_price
    return Line(meter, award.q_wh, metered_wh, award.amount(), money(deviation, price))


def grid_amount(import_wh: int, export_wh: int, market: MarketConfig) -> int:
    """What the community is paid (+) or pays (-) at its connection point for one interval."""
    return money(export_wh, market.export_price) - money(import_wh, market.import_price)


def share_weights(lines: list[Line], rule: str, awards: Mapping[str, Award] | None = None) -> list[int]:
    """Integer weights of each member's share of what is left over.

    Under a sharing rule (``equal``, ``proportional``) the clearing gave each bidder a share of
    the grid bill (Award.share_ppm, Moret & Pinson's allocation inside the members' problems):
    those shares, members without one (no bid) having paid their energy at the grid prices.
    Without shares (nobody's bid was cleared): ``equal`` one each, ``proportional`` the metered
    net energy. Otherwise (``marginal``) the deviation, since what is left over then comes from
    deviations the connection point nets out (one member's extra import met by another's extra
    export is bought at the import price and sold at the feed-in price by the members, but never
    crosses the connection point)."""
    if rule in ("equal", "proportional"):
        shares = [(awards or {}).get(x.meter, Award(0, 0)).share_ppm or 0 for x in lines]
        if any(shares):
            return shares
        return [1] * len(lines) if rule == "equal" else [abs(x.metered_wh or 0) for x in lines]
    return [abs((x.metered_wh or 0) - x.award_wh) for x in lines]


def share_grid_bill(lines: list[Line], import_wh: int, export_wh: int, market: MarketConfig,
                    awards: Mapping[str, Award] | None = None) -> list[Line]:
    """The lines with their shares, so that they add up to the community's grid amount."""
    left = grid_amount(import_wh, export_wh, market) - sum(x.award_amount + x.deviation_amount for x in lines)
    parts = split(left, share_weights(lines, market.allocation, awards))
    return [replace(x, share_amount=part) for x, part in zip(lines, parts)]


def adjustment(previous: Iterable[Line], target: Line) -> Line | None:
    """The revision that brings the sum of ``previous`` lines to ``target``, or None."""
    prev = list(previous)
    award_amount = target.award_amount - sum(p.award_amount for p in prev)
    deviation_amount = target.deviation_amount - sum(p.deviation_amount for p in prev)
    share_amount = target.share_amount - sum(p.share_amount for p in prev)
    if (award_amount == 0 and deviation_amount == 0 and share_amount == 0 and prev
            and prev[-1].metered_wh == target.metered_wh):
        return None
    return Line(target.meter, target.award_wh, target.metered_wh, award_amount, deviation_amount, share_amount)


@dataclass(frozen=True)
class Balance:
    balanced: bool | None  # None: no feeder reading to compare with
    diff_wh: int | None  # feeder net import minus members' net import (losses, if positive)


# Reading flags that mean a record is not exactly its interval's energy, so the interval
# cannot be checked against the feeder until late or corrected data arrives.
INEXACT_FLAGS = (messages.FLAG_PARTIAL | messages.FLAG_METER_OFFLINE | messages.FLAG_COUNTER_RESET
                 | messages.FLAG_QUEUE_OVERFLOW | messages.FLAG_TIME_UNSYNCED)


def balance(feeder_net_import_wh: int | None, feeder_throughput_wh: int, members_net_import_wh: int,
            cfg: SettlementConfig, complete: bool = True, members_gross_wh: int = 0, records: int = 0) -> Balance:
    """Energy in equals energy out: compare the feeder with the members, within the tolerance.
    Undecided (None) without a feeder reading, or when some meter's data is missing or inexact.

    The tolerance is a share of all the energy the meters measured, the members' as well as
    the feeder's: every meter has its accuracy class, and in a community that trades within
    itself the members' flows are large while the feeder's net may be near zero. It is never
    below one Wh per record compared: each record is the difference of two counters in whole
    Wh, so it is off by less than one Wh, and with little flowing that is what remains."""
    if feeder_net_import_wh is None:
        return Balance(None, None)
    diff = feeder_net_import_wh - members_net_import_wh
    if not complete:
        return Balance(None, diff)
    tolerance = max(cfg.loss_tolerance_wh, records,
                    int(cfg.loss_tolerance * (feeder_throughput_wh + members_gross_wh)))
    return Balance(abs(diff) <= tolerance, diff)
