"""The gateway's MQTT pump processes: their framing, their restart when one dies, and their end
with the daemon, however the daemon ends."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from gateway.config import GatewayConfig
from gateway.daemon import GatewayThread
from gateway.ingest.frames import HEADER, MAX_FRAME, FrameBuffer, frame
from protocols import messages
from sim_hardware.harness.mosquitto import MosquittoBroker
from sim_hardware.netutil import free_port
from tests.gateway.conftest import (
    backlog,
    first_point_clearing,
    make_config,
    provision,
    wait_until,
    write_tls_files,
)
from tests.gateway.meters import AckCollector, MeterSpec, publisher, reading
from tests.gateway.test_crash import start, write_toml


def test_frames_arrive_whole_whatever_the_reads_cut() -> None:
    data = frame("messages", [("t/1", b"\x00" * 300), ("t/2", b"x")]) + frame("up", True)
    buf = FrameBuffer()
    got = []
    for i in range(0, len(data), 7):  # any cut, even inside a header
        got += buf.feed(data[i:i + 7])
    assert got == [("messages", [("t/1", b"\x00" * 300), ("t/2", b"x")]), ("up", True)]
    assert not buf.buf


def test_an_absurd_frame_length_is_an_error_not_an_allocation() -> None:
    with pytest.raises(ValueError, match="frame of"):
        FrameBuffer().feed(HEADER.pack(MAX_FRAME + 1) + b"junk")


def _acked(pub, acks: AckCollector, spec: MeterSpec, iv: int, cfg: GatewayConfig) -> bool:  # noqa: ANN001
    """Publish the meter's next reading until acked, as a meter does."""
    topic, payload, key = reading(spec, "c1", iv, cfg.interval_s)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pub.publish(topic, payload, qos=1)
        if acks.wait_for({key}, timeout=2):
            return True
    return False


def test_a_broken_frame_from_a_pump_ends_its_reading_instead_of_the_daemon() -> None:
    import asyncio
    from collections import Counter

    from gateway.ingest.frames import PumpSettings
    from gateway.ingest.pump import Pump

    got: list = []

    async def read(data: bytes) -> None:
        stdout = asyncio.StreamReader()
        stdout.feed_data(data)
        stdout.feed_eof()
        await Pump(PumpSettings("up", "127.0.0.1", 1, "x"), got.extend, Counter())._read(stdout)

    good = frame("messages", [("t/1", b"a")])
    asyncio.run(read(good + HEADER.pack(5) + b"\x80junk" + good))  # not a pickle
    asyncio.run(read(good + HEADER.pack(MAX_FRAME + 1) + good))  # absurd length
    assert got == [("t/1", b"a"), ("t/1", b"a")]  # what came before the broken frame, nothing after


@pytest.mark.mosquitto
def test_a_killed_pump_is_restarted_and_ingest_goes_on(gw_config: GatewayConfig, mosquitto: MosquittoBroker) -> None:
    spec = provision(gw_config, 1)[0]
    gw = GatewayThread(gw_config, first_point_clearing).start()
    acks = AckCollector(mosquitto.host, mosquitto.port, "c1", {spec.meter: spec.key})
    pub = publisher(mosquitto.host, mosquitto.port)
    iv = messages.interval_index(time.time(), gw_config.interval_s)
    try:
        assert _acked(pub, acks, spec, iv, gw_config)
        for pump in (gw.gateway.uplink, gw.gateway.downlink):
            assert pump is not None and pump.proc is not None
            os.kill(pump.proc.pid, signal.SIGKILL)
        assert wait_until(lambda: gw.gateway.counters["up_restarts"] == gw.gateway.counters["down_restarts"] == 1)
        assert wait_until(lambda: gw.gateway.snapshot()["health"] == "ok")
        assert _acked(pub, acks, spec, iv, gw_config)  # the meter's next reading
    finally:
        pub.loop_stop()
        acks.close()
        gw.stop()
    assert gw.error is None


@pytest.mark.mosquitto
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_pumps_end_with_the_daemon(gw_config: GatewayConfig, mosquitto: MosquittoBroker, tmp_path, how: int) -> None:  # noqa: ANN001
    toml = write_toml(gw_config, tmp_path / "gateway.toml")
    daemon = start(toml, tmp_path / "gateway.log")
    try:
        parent = psutil.Process(daemon.pid)
        assert wait_until(lambda: len(parent.children()) == 2, timeout=30), "the daemon did not start its pumps"
        pumps = parent.children()
        assert all("gateway.ingest.pump_process" in " ".join(p.cmdline()) for p in pumps)
        daemon.send_signal(how)
        daemon.wait(30)
        gone, alive = psutil.wait_procs(pumps, timeout=15)
        assert not alive, f"pumps outlived the daemon ({signal.Signals(how).name})"
    finally:
        if daemon.poll() is None:
            daemon.kill()


@pytest.mark.mosquitto
def test_a_backlog_over_tls_is_taken_whole(tmp_path) -> None:  # noqa: ANN001
    """The gateway over TLS (its pumps read the broker in buffered chunks, cut anywhere by TLS
    records): a backlog of many records, queued while it was away, is taken whole."""
    ca, cert, key = write_tls_files(tmp_path / "tls")
    tls_port = free_port()
    broker = MosquittoBroker(workdir=tmp_path / "mq", extra_config=(
        f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"))
    broker.workdir.mkdir()
    with broker:
        cfg = make_config(tmp_path, broker)
        cfg.mqtt.port, cfg.mqtt.tls, cfg.mqtt.ca = tls_port, True, str(ca)
        with backlog(cfg, broker, meters=20, per_meter=50) as (acks, wanted):
            gw = GatewayThread(cfg, first_point_clearing).start()
            try:
                assert acks.wait_for(wanted, timeout=20), f"{len(wanted - acks.acks.keys())} of {len(wanted)} not acked"
                assert set(acks.acks.values()) == {messages.ACK_STORED}
                assert gw.gateway.counters["stored"] == len(wanted)
            finally:
                gw.stop()
        assert gw.error is None
