"""c104 2.2.1: does RSS grow with the monitor-direction ASDUs a master sends to a Server?

Standalone (c104 and the standard library only), loopback. A bare server with one station;
a plain-socket master STARTDTs and sends N M_ME_NC_1 (type 13, COT 3) ASDUs, which a
server does not expect (c104 answers each with COT 44 and reports it to
on_unexpected_message when a callback is set). RSS is read before and after, after a
warm-up. The growth comes with the raw-octet callbacks, not with the ASDUs themselves:
each answer is a frame written, which ``on_send_raw`` leaks (raw_callback_leak.py), and
each ASDU a frame read, which ``on_receive_raw`` leaks.

    python docs/c104/monitor_asdu_leak.py [N] [--callback] [--send-raw] [--receive-raw]

Measured (Linux x86-64, Python 3.11, c104 2.2.1): see README "Known limits of c104 2.2.1".
"""

import socket
import struct
import sys
import time

import c104

PORT = 24100 + len(sys.argv)
N = int(next((a for a in sys.argv[1:] if a.isdigit()), "50000"))


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def i_frame(ns: int, nr: int, asdu: bytes) -> bytes:
    return bytes((0x68, 4 + len(asdu))) + struct.pack("<HH", ns << 1, nr << 1) + asdu


class Reader:
    """Reads the server's frames; counts I-frames (each answer is one: COT 44, unknown type)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def i_frames(self, expected: int, timeout_s: float = 2.0) -> int:
        self.sock.settimeout(timeout_s)
        count = 0
        while count < expected:
            while len(self.buf) >= 2 and len(self.buf) >= 2 + self.buf[1]:
                count += not (self.buf[2] & 1)
                self.buf = self.buf[2 + self.buf[1] :]
            if count >= expected:
                break
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buf += chunk
        return count


def send_monitor_asdus(reader: Reader, n: int, ns: int, nr: int) -> tuple[int, int]:
    # M_ME_NC_1, 1 object, COT 3 spontaneous, CA 1, IOA 1, 1.0, quality 0
    asdu = bytes((13, 1, 3, 0, 1, 0, 1, 0, 0)) + struct.pack("<fB", 1.0, 0)
    for i in range(0, n, 8):  # w = 8 frames, then acknowledge the server's answers
        batch = min(8, n - i)
        reader.sock.sendall(b"".join(i_frame((ns + j) % 32768, nr % 32768, asdu) for j in range(batch)))
        ns += batch
        nr += reader.i_frames(batch)
        reader.sock.sendall(bytes((0x68, 4, 1, 0)) + struct.pack("<H", (nr % 32768) << 1))
    return ns, nr


def on_unexpected(server: c104.Server, message: c104.IncomingMessage, cause: c104.Umc) -> None:
    pass


def on_send_raw(server: c104.Server, data: bytes) -> None:
    pass


def main() -> None:
    server = c104.Server(ip="127.0.0.1", port=PORT)
    server.add_station(common_address=1)
    if "--callback" in sys.argv:
        server.on_unexpected_message(callable=on_unexpected)
    if "--send-raw" in sys.argv:
        server.on_send_raw(callable=on_send_raw)
    if "--receive-raw" in sys.argv:
        server.on_receive_raw(callable=on_send_raw)
    server.start()
    sock = socket.create_connection(("127.0.0.1", PORT))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(bytes.fromhex("680407000000"))  # STARTDT act
    reader = Reader(sock)
    reader.sock.settimeout(2.0)
    assert sock.recv(6) == bytes.fromhex("68040b000000"), "no STARTDT con"
    ns, nr = send_monitor_asdus(reader, 2000, 0, 0)  # warm-up
    before = rss()
    started = time.monotonic()
    ns, nr = send_monitor_asdus(reader, N, ns, nr)
    took = time.monotonic() - started
    time.sleep(5.0)  # let c104's task thread finish the callbacks it queued
    after = rss()
    print(
        f"{N} monitor-direction ASDUs in {took:.1f} s: RSS +{(after - before) / 1024:.0f} KiB,"
        f" {(after - before) / N:.1f} B per ASDU (callbacks: {' '.join(sys.argv[2:]) or 'none'})"
    )
    sock.close()
    server.stop()


if __name__ == "__main__":
    main()
