"""HTML of the member page and the operator view: plain string templates, every value escaped
(``html.escape``) unless it is already markup made here (``Safe``). One small stylesheet served
by the gateway itself (no external assets); tables scroll sideways inside their box on a phone,
so the page itself never does."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from gateway.bills import currency
from gateway.web.memberdata import BillLine, MemberView, OperatorView, age

CSS = """
*{box-sizing:border-box}body{margin:0;font:16px/1.45 system-ui,sans-serif;color:#1b1f23;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:12px}h1{font-size:1.4em;margin:.4em 0}h2{font-size:1.1em;margin:0 0 .4em}
section{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:12px;margin:12px 0}
.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:4px 8px;border-bottom:1px solid #eceff3;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}.gain{color:#17663a}.loss{color:#a8201a}.note{color:#555;font-size:.9em}
.big{font-size:1.3em;font-weight:600}code{word-break:break-all}a{color:#0b5cad}@media(max-width:600px){body{font-size:15px}th,td{padding:3px 5px}}
"""


class Safe(str):
    """Markup made here: not escaped again."""


def esc(value: Any) -> str:
    return value if isinstance(value, Safe) else html.escape(str(value), quote=True)


def render(template: str, **values: Any) -> Safe:
    return Safe(template.format(**{k: esc(v) for k, v in values.items()}))


def join(parts: list[Safe]) -> Safe:
    return Safe("".join(parts))


def page(title: str, body: Safe) -> str:
    return render('<!doctype html><html lang="en"><head><meta charset="utf-8">'
                  '<meta name="viewport" content="width=device-width, initial-scale=1">'
                  '<meta name="referrer" content="no-referrer"><title>{title}</title>'
                  '<link rel="stylesheet" href="/web.css"></head><body><main>{body}</main></body></html>',
                  title=title, body=body)


def message(title: str, text: str) -> str:
    return page(title, render("<h1>{t}</h1><section><p>{x}</p></section>", t=title, x=text))


def table(head: list[str], rows: list[list[Any]]) -> Safe:
    cells = join([render("<th>{h}</th>", h=h) for h in head])
    body = join([render("<tr>{c}</tr>", c=join([render("<td>{v}</td>", v=v) for v in row])) for row in rows])
    return render('<div class="scroll"><table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table></div>',
                  h=cells, b=body)


def money(micro: int, unit: str) -> str:
    return f"{currency(micro)} {unit}"


def when(iv: int, interval_s: int) -> str:
    return datetime.fromtimestamp(iv * interval_s, UTC).strftime("%Y-%m-%d %H:%M UTC")


def kwh(wh: int) -> str:
    return f"{wh / 1000:.3f} kWh"  # display only: the money is integer micro-currency throughout


def _saving(micro: int, unit: str) -> Safe:
    return render('<span class="{c}">{m}</span>', c="gain" if micro >= 0 else "loss", m=money(micro, unit))


def _bills(lines: list[BillLine], unit: str) -> Safe:
    if not lines:
        return Safe("<p>No settled interval yet.</p>")
    # The money first: on a phone the columns to the right are a sideways scroll away.
    return table(["period", "community", "alone", "saving", "in", "out", "intervals"],
                 [[b.period, money(b.community, unit), money(b.alone, unit), _saving(b.saving, unit),
                   kwh(b.energy_in_wh), kwh(b.energy_out_wh), b.intervals] for b in lines])


def member_page(v: MemberView, interval_s: int, unit: str, now: float) -> str:
    m = v.meter
    month = v.months[0] if v.months else None
    headline = (render('<p class="big" id="bill">Latest month ({p}): {c}, saving {s}</p>', p=month.period,
                       c=money(month.community, unit), s=_saving(month.saving, unit)) if month
                else Safe('<p class="big" id="bill">No bill yet.</p>'))
    bids = table(["interval", "curve (Wh at price per kWh)"],
                 [[when(iv, interval_s), ", ".join(f"{q} Wh @ {currency(p)}" for q, p in curve)] for iv, curve in v.bids])
    awards = table(["interval", "awarded", "price per kWh"],
                   [[when(iv, interval_s), f"{q} Wh", money(p, unit)] for iv, q, p, _ in v.awards])
    trades = [[when(iv, interval_s), peer, f"{q} Wh", money(p, unit)] for iv, _, _, ts in v.awards for peer, q, p in ts]
    readings = table(["interval", "in", "out", "flags", "received"],
                     [[when(iv, interval_s), f"{i} Wh", f"{o} Wh", f, age(at, now)] for iv, i, o, f, at in v.readings])
    cp = v.checkpoint
    if cp is None:
        proofs = Safe("<p>No signed checkpoint yet: proofs come with the first one.</p>")
    else:
        links = [[when(iv, interval_s), n, render('<a class="proof" href="/m/{m}/proof?iv={iv}&amp;size={s}"'
                                                  ' download>proof (JSON)</a>', m=m, iv=iv, s=cp.size)]
                 for iv, n in v.proofs]
        proofs = render(
            '<p>Latest checkpoint: size {size}, root <code>{root}</code>, signed {at}. '
            '<a id="checkpoint" href="/m/{m}/checkpoint?size={size}" download>checkpoint note</a> · '
            '<a id="pubkey" href="/m/{m}/pubkey" download>gateway public key</a></p>{t}'
            '<p class="note">Check a proof offline: <code>tmeter ledger check-proof --proof FILE --checkpoint NOTE'
            ' --pubkey PEM</code>. The key is worth getting from the operator too, not only from this page.</p>',
            size=cp.size, root=cp.root, at=age(cp.created, now), m=m, t=table(["interval", "records", ""], links))
    state = v.current_state or "no bids yet"
    body = render(
        '<h1>Member {m}</h1>{head}'
        '<section><h2>Current interval</h2><p>{cur} ({state})</p></section>'
        '<section><h2>Bills per month</h2>{months}</section>'
        '<section><h2>Bills per day</h2>{days}<p class="note">Alone = the same energy at the grid prices'
        ' (import and feed-in tariff). Positive amounts are paid by you. '
        '<a id="csv" href="/m/{m}/bills.csv" download>Download the bills (CSV)</a></p></section>'
        '<section><h2>Bids</h2>{bids}</section><section><h2>Awards</h2>{awards}</section>'
        '<section><h2>Trades (peer to peer)</h2>{trades}</section>'
        '<section><h2>Readings</h2>{readings}</section>'
        '<section><h2>Inclusion proofs</h2>{proofs}</section>',
        m=m, head=headline, cur=when(v.current_iv, interval_s), state=state, months=_bills(v.months, unit),
        days=_bills(v.days, unit), bids=bids, awards=awards,
        trades=table(["interval", "peer", "energy", "price per kWh"], trades) if trades
        else Safe("<p>No peer-to-peer trade.</p>"), readings=readings, proofs=proofs)
    return page(f"tmeter: {m}", body)


def _yes(value: bool | None) -> str:
    return "unknown" if value is None else ("online" if value else "offline")


def operator_page(v: OperatorView, interval_s: int, now: float, failed: int, refused: int) -> str:
    rows = [[h.meter, _yes(h.online), when(h.last_reading_iv, interval_s) if h.last_reading_iv is not None else "none",
             age(h.last_reading_at, now), "" if h.queue_depth is None else h.queue_depth,
             "" if h.modbus_errors is None else h.modbus_errors, h.firmware or "not reported", age(h.status_at, now),
             "yes" if h.link_issued else "no"] for h in v.meters]
    cp = v.checkpoint
    ledger = (render("<p>{n} leaves; latest checkpoint size {s} signed {at}, {tail} leaves after it.</p>",
                     n=v.leaves, s=cp.size, at=age(cp.created, now), tail=v.leaves - cp.size) if cp
              else render("<p>{n} leaves; no checkpoint yet.</p>", n=v.leaves))
    states = ", ".join(f"{k} {n}" for k, n in sorted(v.intervals.items())) or "none"
    body = render(
        "<h1>Operator</h1><section><h2>Members and meters</h2>{t}</section>"
        "<section><h2>Ledger</h2>{ledger}<p>Intervals: {states}.</p></section>"
        "<section><h2>Member logins</h2><p>{f} wrong links, {r} refused by the rate limit since start.</p></section>",
        t=table(["meter", "online", "last reading", "received", "queue", "Modbus errors", "firmware", "status",
                 "link"], rows), ledger=ledger, states=states, f=failed, r=refused)
    return page("tmeter: operator", body)
