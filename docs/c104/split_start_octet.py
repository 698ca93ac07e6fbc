"""c104 2.2.1 (lib60870): a frame whose start octet arrives alone drops the master. Standalone, loopback.

lib60870's ``receiveMessage`` (cs104_slave.c) reads the start octet, then reads the length
octet at once and treats "not there yet" as an error: ``readFromSocket(...) != 1`` returns
-1 and the connection is closed, without an answer to the command. TCP may split a frame
anywhere, so a master on a slow or segmenting path can hit this with a valid frame.

    python docs/c104/split_start_octet.py [TRIALS]

For each split point (after octet 1, 2, 6) it sends a valid C_SE_NC_1 in two TCP segments
20 ms apart and counts ACT_CONs and dropped connections.
"""

import socket
import sys
import time

import c104

PORT = 24400
TRIALS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
SETPOINT = bytes.fromhex("681200000000320106000100640000000040" + "9c4600")  # IOA 100 = 20000.0


def on_receive(
    point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
) -> c104.ResponseState:
    return c104.ResponseState.SUCCESS


def trial(split: int) -> str:
    with socket.create_connection(("127.0.0.1", PORT)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(2.0)
        sock.sendall(bytes.fromhex("680407000000"))
        if sock.recv(6) != bytes.fromhex("68040b000000"):
            return "no STARTDT con"
        sock.sendall(SETPOINT[:split])
        time.sleep(0.02)
        try:
            sock.sendall(SETPOINT[split:])
            answer = sock.recv(64)
        except (ConnectionError, TimeoutError) as exc:
            return f"dropped ({type(exc).__name__})"
        if not answer:
            return "dropped (closed)"
        return "ACT_CON" if len(answer) > 8 and answer[8] & 0x3F == 7 else f"answer {answer.hex()}"


def main() -> None:
    server = c104.Server(ip="127.0.0.1", port=PORT)
    station = server.add_station(common_address=1)
    assert station is not None
    point = station.add_point(io_address=100, type=c104.Type.C_SE_NC_1)
    assert point is not None
    point.on_receive(callable=on_receive)
    server.start()
    try:
        for split in (1, 2, 6):
            outcomes = [trial(split) for _ in range(TRIALS)]
            summary = {o: outcomes.count(o) for o in sorted(set(outcomes))}
            print(f"split after octet {split}: {summary}")
            time.sleep(0.2)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
