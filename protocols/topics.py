# MQTT topic layout, protocol v1:
#   tm/v1/<community>/meters/<meter>/reading|bid|status   meter -> gateway (status retained, last will)
#   tm/v1/<community>/meters/<meter>/ack|award            gateway -> one meter
#   tm/v1/<community>/market/<interval>/result            public clearing result
#   tm/v1/<community>/gateway/status                      retained, last will
#   tm/v1/<community>/ledger/checkpoint                   retained, latest signed checkpoint
from protocols import const
from protocols.errors import ProtocolError

ROOT = "tm/v1/"
METER_UP = ("reading", "bid", "status")
METER_DOWN = ("ack", "award")
_MAX_ID_LEN = const(32)
_MAX_TOPIC_LEN = const(128)
_ID_CHARS = const("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def valid_id(s):
    """Community and meter ids: 1-32 of [A-Za-z0-9_-], so they are safe as topic levels."""
    if type(s) is not str or not 0 < len(s) <= _MAX_ID_LEN:
        return False
    return not s.strip(_ID_CHARS)  # every character allowed (see canonical.text_ok)


def _check_id(s, what):
    if not valid_id(s):
        raise ProtocolError("bad_topic", "invalid " + what + " id")
    return s


def meter_topic(community, meter, kind):
    if kind not in METER_UP and kind not in METER_DOWN:
        raise ProtocolError("bad_topic", "unknown meter topic kind")
    return ROOT + _check_id(community, "community") + "/meters/" + _check_id(meter, "meter") + "/" + kind


def meter_filter(community, kind):
    """Subscription filter for one kind of message from/to every meter."""
    return ROOT + _check_id(community, "community") + "/meters/+/" + kind


def result_topic(community, iv):
    if type(iv) is not int or iv < 0:
        raise ProtocolError("bad_topic", "invalid interval")
    return ROOT + _check_id(community, "community") + "/market/" + str(iv) + "/result"


def gateway_status_topic(community):
    return ROOT + _check_id(community, "community") + "/gateway/status"


def checkpoint_topic(community):
    return ROOT + _check_id(community, "community") + "/ledger/checkpoint"


def _interval(level):
    # Decimal without sign or leading zeros, so one interval has one topic.
    if not level or len(level) > 15 or (len(level) > 1 and level[0] == "0"):
        raise ProtocolError("bad_topic", "invalid interval level")
    for ch in level:
        if ch < "0" or ch > "9":
            raise ProtocolError("bad_topic", "invalid interval level")
    return int(level)


def parse(topic):
    """Split a topic into (community, kind, subject): subject is the meter id for meter topics,
    the interval index for results, None otherwise. Anything else is ProtocolError("bad_topic")."""
    if type(topic) is not str or len(topic) > _MAX_TOPIC_LEN or not topic.startswith(ROOT):
        raise ProtocolError("bad_topic", "not a tm/v1 topic")
    parts = topic[len(ROOT):].split("/")
    community = _check_id(parts[0], "community")
    if len(parts) == 4 and parts[1] == "meters" and (parts[3] in METER_UP or parts[3] in METER_DOWN):
        return community, parts[3], _check_id(parts[2], "meter")
    if len(parts) == 4 and parts[1] == "market" and parts[3] == "result":
        return community, "result", _interval(parts[2])
    if len(parts) == 3 and parts[1] == "gateway" and parts[2] == "status":
        return community, "gateway_status", None
    if len(parts) == 3 and parts[1] == "ledger" and parts[2] == "checkpoint":
        return community, "checkpoint", None
    raise ProtocolError("bad_topic", "unknown topic layout")
