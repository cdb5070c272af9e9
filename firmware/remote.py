# Remote configuration on the meter (issue 13): the commands of protocols/remote.py, verified
# with the meter's current key, applied and answered on tm/v1/<c>/cfg/<meter>/up.
#
# Not resident: app.py imports this module when a command arrives and it unloads itself (and
# protocols.remote) when done, as firmware/ota.py does, so a meter that is never commanded pays
# nothing for it (names included: tests/firmware/test_memory.py). A rotation or reset waiting
# for the queue is kept on the app (a CPython fleet process runs many in one interpreter), and
# the module is imported again when the queue is empty.
#
# Flash (beside config.json, each written via temporary file + rename: atomic on LittleFS):
#   remote.json   {"n": last accepted n, "set": {setting: value}}; firmware/config.py applies
#                 "set" over config.json at boot. A factory reset empties "set", keeps "n".
#   rotate.json   {"kid", "key"}: the rotated key, used instead of config.json's at boot.
#
# A rotation (and a reset, which goes back to the provisioned key) switches keys only when the
# queue of readings is empty: every queued record is then tagged with the key the meter boots
# with, and the gateway, which keeps the old key until it verifies a message under the new one
# (gateway/registry.py), never sees an old-key reading after that. Until the switch the meter
# signs with the old key; a reboot before it loses the rotation (the tool times out, the
# operator runs it again), never a reading.
import json
from binascii import hexlify, unhexlify

from protocols import remote as msgs
from protocols.errors import ProtocolError

SET = "remote.json"
ROT = "rotate.json"
WAIT = "cfg_waiting"   # status counter: 1 while a rotation or reset waits for an empty queue


def _load(board, name):
    try:
        d = json.loads(board.read(name))
        if type(d) is dict:
            return d
    except Exception:  # noqa: BLE001 - absent (a torn one cannot exist: rename)
        pass
    return {}


def _unload():
    from firmware.ondemand import unload
    unload(("firmware.remote", "protocols.remote"))


def _count(app, name):
    app.c[name] = app.c.get(name, 0) + 1


def _answer(app, n, reason, last, kid=None, then=None):
    """Publish the answer (tagged with the key the meter signs with now; ``kid``: the one it
    boots with, if another), then run ``then``."""
    import asyncio
    msg = msgs.answer(app.meter_id, n, 0 if reason else 1, reason, kid or app.kid, last)
    payload = msgs.encode_answer(msg, app.kid, app.key)
    up = msgs.topic(app.cfg["community"], app.meter_id, "up")

    async def send():
        if app.client.connected:
            await app.client.publish(up, payload, 1)
        if then is not None:
            await app.board.sleep_ms(500)  # the answer leaves first
            await then()
    asyncio.create_task(send())


async def _rejoin(app):
    # The broker holds the last will tagged at CONNECT with the old key: a DISCONNECT discards
    # it (MQTT 3.1.1 section 3.14) and the client's reconnect registers one under the new key.
    c = app.client
    if c.connected:
        await c._send(b"\xe0\x00")
        await c._drop()


# -- on the meter's cfg down topic -------------------------------------------------------------
def receive(app, payload):
    board = app.board
    saved = _load(board, SET)
    last = saved.get("n", 0)
    n = 0
    try:
        msg = msgs.decode(payload, app.meter_id, app.kid, app.key, last)
        n = msg["n"]
        saved["n"] = n
        op = msg["op"]
        if op == "set":
            new = saved.get("set") or {}
            new.update(msg["set"])
            saved["set"] = new
            board.write_atomic(SET, json.dumps(saved).encode())
            apply(app.cfg, msg["set"])
            board.log("cfg %d: set %s" % (n, ",".join(sorted(msg["set"]))))
            _answer(app, n, "", n)
        else:
            board.write_atomic(SET, json.dumps(saved).encode())  # the guard first
            app.cfg_wait = (n, op, msg.get("kid"), msg.get("key"))  # a later one replaces it
            app.c[WAIT] = 1
            board.log("cfg %d: %s once the queue is empty" % (n, op))
            if not len(app.outbox):
                ack(app)
    except ProtocolError as e:
        _count(app, "cfg_bad")
        board.log("cfg: refused: " + str(e))
        _answer(app, n, e.code, last)
    except OSError as e:  # flash full or failing: nothing applied
        _count(app, "cfg_bad")
        board.log("cfg: flash: %r" % e)
        _answer(app, n, "flash", last)
    _unload()


def apply(cfg, settings):
    """Accepted settings into the config dict (firmware/config.py does the same at boot)."""
    for name in settings:
        section, _, key = name.rpartition(".")
        (cfg[section] if section else cfg)[key] = settings[name]


def ack(app):
    """The queue is empty (app.py calls this after an ack emptied it): switch keys now."""
    w = getattr(app, "cfg_wait", None)
    if w is None:
        return
    app.cfg_wait = None
    app.c.pop(WAIT, None)
    board = app.board
    n, op = w[0], w[1]
    try:
        if op == "rotate":
            # The file first: a power cut before the rename boots on the old key, whose
            # readings the gateway still takes; after it, on the new one, with nothing queued.
            board.write_atomic(ROT, json.dumps({"kid": w[2],
                                                "key": hexlify(w[3]).decode()}).encode())
            _switch(app, w[2], w[3])
            board.log("cfg %d: signing with key %d" % (n, w[2]))
            _answer(app, n, "", n, None, lambda: _rejoin(app))
        else:
            # Factory reset: back to config.json (identity, provisioned key and settings); the
            # replay guard, boot counter, sequence numbers, queue and OTA slots stay.
            board.write_atomic(SET, json.dumps({"n": n, "set": {}}).encode())
            board.remove(ROT)
            doc = _load(board, "config.json")
            prov = doc.get("kid", app.kid)
            board.log("cfg %d: factory reset, back to key %d" % (n, prov))
            _answer(app, n, "", n, prov, lambda: _reset(board))
            # The answer is tagged (under the old key); from here on every record is signed
            # with the key the meter boots with. A reading closed before the reset took the
            # old key, which the tool retires on the answer, and was lost on the reboot (one
            # run in five under load); under the provisioned key it is taken, at the latest
            # sent again once the tool has reinstated it.
            _switch(app, prov, unhexlify(doc["key"]) if "key" in doc else app.key)
    except OSError as e:  # flash full or failing: the meter keeps the key it signs with
        _count(app, "cfg_bad")
        board.log("cfg: flash: %r" % e)
        _answer(app, n, "flash", n)
    _unload()


async def _reset(board):
    board.reset()


def _switch(app, kid, key):
    app.kid = app.outbox.kid = app.awards.kid = app.cfg["kid"] = kid
    app.key = app.outbox.key = app.awards.key = app.cfg["key_bytes"] = key
