"""c104 2.2.1: how fast a Server takes new connections. Standalone, loopback.

Opens N connections one after the other: connect, STARTDT act, wait for the STARTDT con,
close. Prints connections per second and the distribution of connect-to-STARTDT-con times.
``--close-wait`` waits for the server to see each close before the next connect (one slot
in use at a time); without it, closes pile up against ``max_connections``.

    python docs/c104/accept_rate.py [N] [--close-wait] [--on-connect] [--busy-gil] [--port=P] [--parallel=K]

``--on-connect`` sets a Python ``on_connect`` callback (c104 takes the GIL to call it);
``--busy-gil`` keeps another Python thread busy, as an event loop under load would;
``--port=P`` measures an outstation already listening on 127.0.0.1:P (the gateway);
``--parallel=K`` runs K clients at once (a reconnect storm, or a campaign's churn).
"""

import math
import socket
import statistics
import sys
import time

import c104

TARGET = next(
    (int(a.split("=")[1]) for a in sys.argv if a.startswith("--port=")), 0
)  # an outstation already running
PORT = TARGET or 24500 + len(sys.argv)
N = int(next((a for a in sys.argv[1:] if a.isdigit()), "60"))


def session() -> float:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", PORT), timeout=5.0) as sock:
        sock.sendall(bytes.fromhex("680407000000"))
        con = sock.recv(6)
        took = time.monotonic() - started
        if con != bytes.fromhex("68040b000000"):
            return float("nan")
    return took


def on_connect(server: c104.Server, ip: str) -> bool:
    return True


def busy(stop: list[bool]) -> None:
    while not stop:
        sum(range(10000))


def main() -> None:
    if TARGET:
        return measure(None)
    server = c104.Server(ip="127.0.0.1", port=PORT, max_connections=2)
    server.add_station(common_address=1)
    if "--on-connect" in sys.argv:
        server.on_connect(callable=on_connect)
    stop: list[bool] = []
    if "--busy-gil" in sys.argv:
        import threading

        threading.Thread(target=busy, args=(stop,), daemon=True).start()
    server.start()
    try:
        measure(server)
    finally:
        stop.append(True)
        server.stop()


def measure(server: "c104.Server | None") -> None:
    times: list[float] = []
    started = time.monotonic()
    parallel = next((int(a.split("=")[1]) for a in sys.argv if a.startswith("--parallel=")), 1)
    if parallel > 1:
        from concurrent.futures import ThreadPoolExecutor

        def guarded(_: int) -> float:
            try:
                return session()
            except OSError:
                return float("nan")

        with ThreadPoolExecutor(parallel) as pool:
            times = list(pool.map(guarded, range(N)))
    for _ in range(N if parallel == 1 else 0):
        try:
            times.append(session())
        except OSError:
            times.append(float("nan"))
        if "--close-wait" in sys.argv and server is not None:
            while server.open_connection_count:
                time.sleep(0.001)
    elapsed = time.monotonic() - started
    ok = sorted(t for t in times if not math.isnan(t))
    print(
        f"{N} sessions in {elapsed:.1f} s: {N / elapsed:.1f}/s; failed {N - len(ok)};"
        f" connect->STARTDT con median {statistics.median(ok) * 1000:.0f} ms,"
        f" p90 {ok[int(len(ok) * 0.9) - 1] * 1000:.0f} ms, max {ok[-1] * 1000:.0f} ms;"
        f" over 0.5 s: {sum(t > 0.5 for t in ok)}"
    )


if __name__ == "__main__":
    main()
