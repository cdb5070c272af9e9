# Stand-in for the ESP32 port's `socket` (lwIP): the unix port's sockets, but getaddrinfo on a
# name is a DNS query that blocks the whole interpreter, as lwip_getaddrinfo does on the board
# (seconds on a bad link). TMETER_DNS_MS sets how long; each query is logged ("DNS name") so a
# test counts them. A numeric address is parsed without a query, as lwIP does.
import os

from _port import builtin

_s = builtin("socket")
for _k in dir(_s):
    if not _k.startswith("__"):
        globals()[_k] = getattr(_s, _k)

_real_getaddrinfo = _s.getaddrinfo


def _numeric(host):
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def getaddrinfo(host, port, *args):
    if not _numeric(host):
        print("DNS", host)
        import time
        time.sleep_ms(int(os.getenv("TMETER_DNS_MS") or "0"))
    return _real_getaddrinfo(host, port, *args)
