"""How a leaf's record is stored in ``openings.record``: compressed, decoded back to the exact
bytes the commitment (and, for readings and bids, the meter's HMAC) was made over.

A record is 70-180 bytes of canonical JSON whose keys and shape repeat from leaf to leaf, so
DEFLATE (RFC 1951, raw, no zlib header) with a preset dictionary (the zlib ``zdict``) of one
record of each kind stores it in about a quarter of that (bench/year.py: 142 -> 36 bytes on
average). The stored form starts with a format byte: 0x01 is this dictionary; a record stored
before compression (or by hand) is plain JSON and starts with "{", and is read as it is, so an
existing database needs no migration: its old records stay plain, new ones are compressed.

DICT_V1 is frozen: records stored with it name it by their first byte; a better dictionary
gets a new format byte and this one stays readable.
"""

from __future__ import annotations

import zlib

V1 = b"\x01"
# Frozen with the dictionary: a 4 KiB window holds it and the record (the inflater needs the same).
WBITS = -12
MAX_RECORD = 64 * 1024  # far above any record the gateway writes: a stored blob that inflates more is not one

# The most frequent kinds last: DEFLATE codes nearer matches (the dictionary's end) in fewer bits.
DICT_V1 = (
    b'{"meter":"m000","iv":1996000,"reason":"before_start","record":{"boot":1,"cnt_exp_wh":0,'
    b'"cnt_imp_wh":0,"exp_wh":0,"flags":0,"imp_wh":0,"iv":1996000,"kid":1,"meter":"m000","seq":1,'
    b'"t0":1796400000,"t1":1796400900,"type":"reading","v":1},"type":"quarantined"}'
    b'{"idxs":[],"leaves":0,"member":"m000","type":"erasure"}'
    b'{"archive_sha256":"","cut":0,"from":0,"leaves":0,"through":0,"type":"prune"}'
    b'{"prev_root":"VubIs0qH09KqAbP60l6dPPiVVXCGBQ06Qv2vVt2SbiU=","prev_size":38287,"size":38690,"type":"checkpoint"}'
    b'{"bau_cost":12520,"bids":100,"community_cost":-37574,"grid_export_wh":0,"grid_import_wh":0,"iv":1996100,'
    b'"mech":"uniform","price":109860,"traded_wh":3096,"type":"result","v":1}'
    b'{"amount":-1374600,"balanced":1,"feeder_diff_wh":0,"iv":1996099,"members":100,"rev":0,"type":"interval"}'
    b'{"iv":1996100,"meter":"m099","price":109860,"q_wh":129,"share_ppm":0,"trades":[],"type":"award"}'
    b'{"boot":1,"curve":[[-170,70000],[-20,90000],[130,110000]],"iv":1996100,"kid":1,"meter":"m099","n":95,'
    b'"ts":1796489880,"type":"bid","v":1}'
    b'{"amount":-18452,"award_amount":16832,"award_wh":159,"deviation_amount":-38100,"iv":1996099,"meter":"m099",'
    b'"metered_wh":32,"rev":0,"share_amount":2816,"type":"settlement"}'
    b'{"boot":1,"cnt_exp_wh":16520,"cnt_imp_wh":22288,"exp_wh":160,"flags":0,"imp_wh":128,"iv":1996099,"kid":1,'
    b'"meter":"m099","seq":96,"t0":1796489100,"t1":1796490000,"type":"reading","v":1}'
)


class RecordError(ValueError):
    """A stored record that decodes to no record (edited, truncated, unknown format)."""


def pack(record: bytes) -> bytes:
    """The stored form of ``record``."""
    # memLevel 4: the compressor's set-up, not its search, is what a 150-byte record costs (10 us, not 100).
    co = zlib.compressobj(9, zlib.DEFLATED, WBITS, 4, zlib.Z_DEFAULT_STRATEGY, DICT_V1)
    return V1 + co.compress(record) + co.flush()


def unpack(stored: bytes) -> bytes:
    """The record bytes of a stored form (plain JSON passes as it is)."""
    if stored[:1] != V1:
        return stored  # plain: canonical JSON never starts with 0x01, and verify checks what it is
    do = zlib.decompressobj(WBITS, DICT_V1)
    try:
        out = do.decompress(stored[1:], MAX_RECORD)
        if not do.eof or do.unconsumed_tail or do.unused_data:
            raise RecordError("stored record is truncated, too long or has bytes after its end (edited)")
    except zlib.error as exc:
        raise RecordError(f"stored record does not inflate ({exc}): edited") from None
    return out
