"""Remote configuration messages (protocols/remote.py): commands round trip, and every malformed,
hostile, out-of-range or forged one is refused with one ProtocolError code, the same in CPython
and on the MicroPython unix port (which runs the meter's side)."""

from __future__ import annotations

import json
import subprocess

import pytest

from protocols import canonical, remote, trailer
from protocols.errors import ProtocolError
from tmeter.fwtools.runner import find_micropython, micropython_env

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
NEW = bytes(range(100, 132))
METER, KID, LAST = "m01", 3, 1000


def raw(msg: dict, kid: int = KID, key: bytes = KEY) -> bytes:
    """Tagged without the encoder's checks: what a hostile or buggy sender can send."""
    return trailer.encode(canonical.encode(msg), kid, key)


def cmd(n: int = LAST + 1, op: str = "set", **fields) -> dict:
    return remote.command(METER, n, op, **fields)


def cases() -> list[tuple[str, bytes, str]]:
    """(name, payload, expected: "ok" or the ProtocolError code)."""
    good = remote.encode(cmd(set={"poll_s": 30, "prefs.import_wtp": 250000}), KID, KEY)
    body = good[:good.rfind(b"\n")]
    rot = remote.encode(remote.rotate(METER, LAST + 1, KEY, KID + 1, NEW), KID, KEY)
    many = {f"x{i}": 1 for i in range(17)}
    return [
        ("set", good, "ok"),
        ("rotate", rot, "ok"),
        ("reset", remote.encode(cmd(op="reset"), KID, KEY), "ok"),
        ("forged tag", raw(cmd(set={"poll_s": 30}), KID, OTHER), "bad_tag"),
        ("body changed", body.replace(b"30", b"31") + good[len(body):], "bad_tag"),
        ("wrong meter", raw({**cmd(set={"poll_s": 30}), "meter": "m02"}), "wrong_meter"),
        ("replayed", remote.encode(cmd(n=LAST, set={"poll_s": 30}), KID, KEY), "replayed"),
        ("older n", remote.encode(cmd(n=5, op="reset"), KID, KEY), "replayed"),
        ("unknown key", raw(cmd(op="reset"), KID + 1, KEY), "unknown_key"),
        ("identity", raw(cmd(set={"meter": 1})), "not_allowed"),
        ("key", raw(cmd(set={"key": 1})), "not_allowed"),
        ("broker host", raw(cmd(set={"mqtt.port": 1884})), "not_allowed"),
        ("release key", raw(cmd(set={"release_key": 5})), "not_allowed"),
        ("unknown setting", raw(cmd(set={"turbo": 1})), "unknown_setting"),
        ("poll 0", raw(cmd(set={"poll_s": 0})), "out_of_range"),
        ("poll huge", raw(cmd(set={"poll_s": 10 ** 6})), "out_of_range"),
        ("negative price", raw(cmd(set={"prefs.pv_price": -1})), "out_of_range"),
        ("string value", raw(cmd(set={"poll_s": "30"})), "bad_field"),
        ("nested value", raw(cmd(set={"poll_s": [30]})), "bad_field"),
        ("no settings", raw(cmd(set={})), "bad_field"),
        ("17 settings", raw(cmd(set=many)), "bad_field"),
        ("set not a dict", raw(cmd(set=[1])), "bad_field"),
        ("bool value", trailer.encode(body.replace(b'"poll_s":30', b'"poll_s":true'), KID, KEY),
         "bad_json"),
        ("n string", raw(cmd(n="1001", op="reset")), "bad_field"),  # type: ignore[arg-type]
        ("n huge", raw(cmd(n=2 ** 60, op="reset")), "out_of_range"),
        ("unknown op", raw(cmd(op="reboot")), "bad_field"),
        ("missing op", raw({k: v for k, v in cmd(op="reset").items() if k != "op"}),
         "missing_field"),
        ("extra field", raw({**cmd(op="reset"), "x": 1}), "unknown_field"),
        ("version 2", raw({**cmd(op="reset"), "v": 2}), "bad_version"),
        ("other type", raw({**cmd(op="reset"), "type": "ota_get"}), "bad_type"),
        ("rotate back", remote.encode(remote.rotate(METER, LAST + 1, KEY, KID, NEW), KID, KEY),
         "out_of_range"),
        ("rotate short key", raw(cmd(op="rotate", kid=KID + 1, key="ab" * 31 + "a")), "bad_field"),
        ("rotate upper hex", raw(cmd(op="rotate", kid=KID + 1, key="AB" * 32)), "bad_field"),
        ("rotate not hex", raw(cmd(op="rotate", kid=KID + 1, key="zz" * 32)), "bad_field"),
        ("oversized", raw(cmd(set={"poll_s": 30}))[:-70] + b" " * 1100 + good[-70:], "too_large"),
        ("no trailer", body, "bad_frame"),
        ("not json", trailer.encode(b"{not json", KID, KEY), "bad_json"),
    ]


def decode_code(payload: bytes) -> tuple[str, str]:
    try:
        msg = remote.decode(payload, METER, KID, KEY, LAST)
    except ProtocolError as exc:
        return exc.code, ""
    return "ok", msg["key"].hex() if msg["op"] == "rotate" else json.dumps(msg.get("set"))


@pytest.mark.parametrize("name, payload, expected", cases(), ids=[c[0] for c in cases()])
def test_commands_cpython(name: str, payload: bytes, expected: str) -> None:
    assert decode_code(payload)[0] == expected, name


def test_a_set_and_a_rotation_round_trip() -> None:
    msg = remote.decode(remote.encode(cmd(set={"poll_s": 30}), KID, KEY), METER, KID, KEY, LAST)
    assert msg["set"] == {"poll_s": 30} and msg["n"] == LAST + 1
    payload = remote.encode(remote.rotate(METER, LAST + 1, KEY, KID + 1, NEW), KID, KEY)
    assert NEW.hex().encode() not in payload  # encrypted, not merely tagged
    msg = remote.decode(payload, METER, KID, KEY, LAST)
    assert msg["key"] == NEW and msg["kid"] == KID + 1
    # Another n is another keystream: the same key never encrypts to the same ciphertext twice.
    again = remote.rotate(METER, LAST + 2, KEY, KID + 1, NEW)
    assert again["key"] != json.loads(payload[:payload.rfind(b"\n")])["key"]


def test_answers_round_trip_and_forged_ones_are_refused() -> None:
    ans = remote.answer(METER, 7, 0, "replayed", KID, 6)
    payload = remote.encode_answer(ans, KID, KEY)
    assert remote.decode_answer(payload, METER, {KID: KEY}) == ans
    for keys, meter, code in (({KID: OTHER}, METER, "bad_tag"), ({9: KEY}, METER, "unknown_key"),
                              ({KID: KEY}, "m02", "topic_mismatch")):
        with pytest.raises(ProtocolError) as exc:
            remote.decode_answer(payload, meter, keys)
        assert exc.value.code == code


# The meter's side: the same payloads decoded by the MicroPython unix port.
MPY = r'''
import json, sys
from binascii import unhexlify, hexlify
from protocols import remote
from protocols.errors import ProtocolError
out = []
for h in json.load(open(sys.argv[1])):
    try:
        m = remote.decode(unhexlify(h), "m01", 3, bytes(range(32)), 1000)
        got = hexlify(m["key"]).decode() if m["op"] == "rotate" else json.dumps(m.get("set"))
        out.append(["ok", got])
    except ProtocolError as e:
        out.append([e.code, ""])
print(json.dumps(out))
'''


@pytest.mark.micropython
def test_commands_micropython_as_cpython(tmp_path) -> None:
    all_cases = cases()
    (tmp_path / "cases.json").write_text(json.dumps([p.hex() for _n, p, _e in all_cases]))
    (tmp_path / "run.py").write_text(MPY)
    res = subprocess.run([find_micropython(), str(tmp_path / "run.py"),
                          str(tmp_path / "cases.json")], env=micropython_env(),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for (name, payload, expected), (code, detail) in zip(all_cases, got, strict=True):
        assert code == expected, name
        if code == "ok":
            want = decode_code(payload)[1]
            if detail.startswith("{"):
                assert json.loads(detail) == json.loads(want), name
            else:
                assert detail == want, name
