"""c104 2.2.1 leaks memory on three raw-octet paths of a Server. Standalone, loopback.

1. ``Server.on_send_raw`` / ``on_receive_raw``: for every frame sent (received), c104 makes a
   ``memoryview`` and a ``bytes`` with new references (``PyMemoryView_FromMemory``,
   ``PyBytes_FromObject`` in ``Server::onSendRaw``/``onReceiveRaw``) and never releases them:
   both objects leak, whatever the callback does.
2. ``IncomingMessage.raw``: ``IncomingMessage::getRawBytes`` returns a ``new unsigned char[]``
   that the binding copies into ``bytes`` and never deletes (``raw_explain`` frees its copy).

    python docs/c104/raw_callback_leak.py send-raw [N]   # N frames sent, on_send_raw set
    python docs/c104/raw_callback_leak.py none [N]       # the same without the callback
    python docs/c104/raw_callback_leak.py raw [N]        # N reads of IncomingMessage.raw
    python docs/c104/raw_callback_leak.py raw_explain [N]

Each prints the RSS growth per frame (per read) after a warm-up.
"""

import socket
import struct
import sys
import threading
import time

import c104

MODE = sys.argv[1] if len(sys.argv) > 1 else "send-raw"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 50000
PORT = 24300 + ["send-raw", "none", "raw", "raw_explain"].index(MODE)


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def on_send_raw(server: c104.Server, data: bytes) -> None:
    pass


results: dict[str, float] = {}
received = [0]  # I-frames the master got (frames the server really sent)


def on_receive(
    point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
) -> c104.ResponseState:
    for _ in range(2000):  # warm-up
        getattr(message, MODE)
    before = rss()
    for _ in range(N):
        getattr(message, MODE)
    results[MODE] = (rss() - before) / N
    return c104.ResponseState.SUCCESS


def master(stop: threading.Event) -> None:
    """STARTDT, then acknowledge every I-frame the server sends (w = 8), until stopped."""
    sock = socket.create_connection(("127.0.0.1", PORT))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(0.2)
    sock.sendall(bytes.fromhex("680407000000"))
    buf, nr, unacked = b"", 0, 0
    while not stop.is_set():
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            chunk = b""
        buf += chunk
        while len(buf) >= 2 and len(buf) >= 2 + buf[1]:
            if not buf[2] & 1:
                nr, unacked = nr + 1, unacked + 1
                received[0] += 1
            buf = buf[2 + buf[1] :]
        if unacked:
            sock.sendall(bytes((0x68, 4, 1, 0)) + struct.pack("<H", (nr % 32768) << 1))
            unacked = 0
    sock.close()


def frames_sent(server: c104.Server, point: c104.Point, n: int) -> None:
    sent = 0
    while sent < n:
        point.value = float(sent)
        if point.transmit(cause=c104.Cot.SPONTANEOUS):
            sent += 1
        else:
            time.sleep(0.001)  # c104's queue is full: let it send


def main() -> None:
    server = c104.Server(ip="127.0.0.1", port=PORT, tick_rate_ms=50)
    station = server.add_station(common_address=1)
    assert station is not None
    point = station.add_point(io_address=200, type=c104.Type.M_ME_NC_1)
    command = station.add_point(io_address=100, type=c104.Type.C_SE_NC_1)
    assert point is not None and command is not None
    command.on_receive(callable=on_receive)
    if MODE == "send-raw":
        server.on_send_raw(callable=on_send_raw)
    server.start()
    stop = threading.Event()
    thread = threading.Thread(target=master, args=(stop,))
    thread.start()
    while server.active_connection_count == 0:
        time.sleep(0.01)
    if MODE in ("send-raw", "none"):
        frames_sent(server, point, 5000)  # warm-up
        time.sleep(1.0)
        before, first = rss(), received[0]
        frames_sent(server, point, N)
        time.sleep(3.0)  # c104's task thread runs the queued callbacks
        grown, frames = rss() - before, received[0] - first
        print(f"{MODE}: {frames} frames sent, RSS +{grown / 1024:.0f} KiB, {grown / frames:.1f} B a frame")
    else:
        with socket.create_connection(("127.0.0.1", PORT)) as cmd:
            cmd.sendall(bytes.fromhex("680407000000"))
            time.sleep(0.2)
            cmd.sendall(bytes.fromhex("681200000000320106000100640000000040 9c4600".replace(" ", "")))
            deadline = time.monotonic() + 120
            while MODE not in results and time.monotonic() < deadline:
                time.sleep(0.05)
        print(f"{MODE}: {N} reads, {results.get(MODE, float('nan')):.1f} B a read")
    stop.set()
    thread.join()
    server.stop()


if __name__ == "__main__":
    main()
