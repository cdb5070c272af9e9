"""The store-and-forward queue (firmware/outbox.py, run here under CPython): order, acks in any
order, the full-queue policy, recovery from flash after a reboot, damaged records, and an index
that never grows after construction (a queue filling up in an outage must not ask a fragmented
MicroPython heap for a bigger block)."""

from __future__ import annotations

from pathlib import Path

from firmware.hal_unix import Board
from firmware.outbox import Outbox
from protocols import meterlink

KEY = bytes(range(32))


def record(seq: int, boot: int = 1) -> bytes:
    msg = meterlink.reading("m01", 1, boot, seq, 1900000 + seq, 1710000000, 1710000900, 5, 0,
                            1000 + seq, 0, 0)
    return meterlink.encode(msg, KEY)


def outbox(tmp_path: Path, limit: int = 4) -> tuple[Outbox, dict[str, int]]:
    counters = {"q_drop": 0, "q_bad": 0}
    box = Outbox(Board({}, str(tmp_path)), 1, KEY, limit, counters)
    assert box.load() == 0
    return box, counters


def test_acks_in_any_order_leave_the_rest_in_order(tmp_path: Path) -> None:
    box, _c = outbox(tmp_path)
    for seq in range(4):
        box.put(seq, 1, record(seq))
    assert len(box) == 4 and box.oldest(3) == [0, 1, 2]
    assert box.get(2) == record(2)
    assert box.ack(2, 1) and not box.ack(2, 1)  # a late duplicate ack changes nothing
    assert not box.ack(3, 2)  # same seq, another boot: not this record
    assert box.ack(0, 1)
    assert box.oldest(10) == [1, 3] and box.has(3) and not box.has(2)
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["0000000001-1", "0000000003-1"]


def test_a_full_queue_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    box, c = outbox(tmp_path, limit=3)
    for seq in range(3):
        box.put(seq, 1, record(seq))
    assert box.make_room() == 1 and c["q_drop"] == 1
    box.put(3, 1, record(3))
    assert box.oldest(5) == [1, 2, 3] and box.get(0) is None


def test_the_index_never_grows(tmp_path: Path) -> None:
    box, _c = outbox(tmp_path, limit=5)
    lists = (box._seq, box._boot)
    for seq in range(40):
        box.make_room()
        box.put(seq, 1 + seq // 10, record(seq, 1 + seq // 10))
        if seq % 3 == 0:
            box.ack(box.oldest(1)[0], box._boot[0])
    assert box._seq is lists[0] and box._boot is lists[1]
    assert len(box._seq) == len(box._boot) == 5
    assert box.oldest(5) == [36, 37, 38, 39] and len(box) == 4


def test_reboot_recovers_the_queue_from_flash(tmp_path: Path) -> None:
    box, _c = outbox(tmp_path, limit=8)
    for seq in (5, 6, 7):
        box.put(seq, 2, record(seq, 2))
    (tmp_path / "q" / "0000000008-2.tmp").write_bytes(b"torn write")
    (tmp_path / "q" / "junk").write_bytes(b"")
    again, _c = outbox(tmp_path, limit=8)
    assert again.oldest(8) == [5, 6, 7] and again.get(6) == record(6, 2)
    assert meterlink.decode("tm/v1/c1/meters/m01/reading", record(7, 2),
                            lambda m, k: KEY)[2] == again.newest()
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == [
        "0000000005-2", "0000000006-2", "0000000007-2"]


def test_a_smaller_queue_after_reboot_keeps_the_newest(tmp_path: Path) -> None:
    box, _c = outbox(tmp_path, limit=6)
    for seq in range(6):
        box.put(seq, 1, record(seq))
    counters = {"q_drop": 0, "q_bad": 0}
    small = Outbox(Board({}, str(tmp_path)), 1, KEY, 4, counters)
    assert small.load() == 2 and counters["q_drop"] == 2
    assert small.oldest(4) == [2, 3, 4, 5] and len(list((tmp_path / "q").iterdir())) == 4


def test_a_damaged_record_is_counted_and_dropped(tmp_path: Path) -> None:
    box, c = outbox(tmp_path)
    box.put(1, 1, record(1))
    box.put(2, 1, record(2))
    path = tmp_path / "q" / "0000000001-1"
    path.write_bytes(path.read_bytes().replace(b'"imp_wh":5', b'"imp_wh":6'))
    assert box.get(1) is None and c["q_bad"] == 1
    assert box.oldest(4) == [2] and not path.exists()
