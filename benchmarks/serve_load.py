"""`vaelab serve` under load: N concurrent clients for a fixed time (and at most a fixed number of
requests) against the real server, started as `vaelab serve RUN --port 0` in a subprocess on
127.0.0.1; the old werkzeug development server (`--server werkzeug`, kept for this comparison
only) runs the same app the same way.

    python benchmarks/serve_load.py                      # 64 clients, 60 s, both servers
    python benchmarks/serve_load.py --run RUN --clients 4 --seconds 2 --max-requests 100

Each client is an asyncio task on one keep-alive HTTP/1.1 connection of its own (the standard
library's streams; a new connection where the server closes one), sending a seeded mix of what
the explorer's page sends: page loads (/ and its two static files), /api/info, /api/points,
decodes, encodes and interpolations. Every request has a time-out (`--timeout`), and the run
stops at `--seconds` or `--max-requests` (split evenly between the turns), whichever comes
first. An error is any answer other
than 200, a time-out or a broken connection. Reported per server: throughput, p50 and p99
latency per endpoint, errors, the server process's resident memory (VmRSS) before and after the
load, and the server's exit code after SIGTERM once its turns are over (0: a graceful stop).

Both servers start at once and take turns: `--rounds` turns each (4 by default, of a quarter of
`--seconds`), the order reversed every round, so that what else runs on the machine weighs on
both alike; the client shares the machine with them, as a browser would. Without --run it
trains a small VAE first (`vaelab train vae --max-steps 200`).
Writes benchmarks/results/serve_load.json (or `--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import vaelab
from vaelab.fileio import atomic_write_json
from vaelab.serve.server import ServerLimits

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "serve_load.json"
# endpoint -> share of the requests: dragging on the plane decodes, the rest is occasional
MIX = {"page": 0.06, "info": 0.06, "points": 0.04, "decode": 0.5, "encode": 0.14,
       "interpolate": 0.2}  # fmt: skip
PAGE_FILES = ("/", "/static/app.js", "/static/style.css")
URL = re.compile(r"http://127\.0\.0\.1:(\d+)/")

# The same app on werkzeug's threaded development server (what `vaelab serve` ran before).
WERKZEUG = """
import sys
from werkzeug.serving import make_server
from vaelab.serve import Explorer, create_app
app = create_app(Explorer.from_run(sys.argv[1]))
server = make_server("127.0.0.1", 0, app, threaded=True)
app.config["SERVE_PORT"] = server.port
print(f"serving {sys.argv[1]} at http://127.0.0.1:{server.port}/", flush=True)
server.serve_forever()
"""


def first_model_name(info: Path = Path("/proc/cpuinfo")) -> str:
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def train_run(folder: Path) -> Path:
    run = folder / "serve-run"
    cmd = [sys.executable, "-m", "vaelab", "train", "vae", "--max-steps", "200", "--out",
           str(run), "--quiet"]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=1800)
    return run


def start_server(kind: str, run: Path) -> tuple[subprocess.Popen, int]:
    """The server in a subprocess of its own; it and the port it printed."""
    if kind == "waitress":
        cmd = [sys.executable, "-m", "vaelab", "serve", str(run), "--port", "0", "--quiet"]
    else:
        cmd = [sys.executable, "-c", WERKZEUG, str(run)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)  # fmt: skip
    for _ in range(20):  # the lines before the URL: a note or two at most
        match = URL.search(proc.stdout.readline())
        if match:
            return proc, int(match.group(1))
    proc.kill()
    raise RuntimeError(f"{kind} printed no URL")


class Client:
    """One keep-alive connection; requests one at a time, reconnecting where needed."""

    def __init__(self, port: int):
        self.port, self.reader, self.writer = port, None, None

    async def request(self, method: str, path: str, body: bytes = b"") -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        kind = "Content-Type: application/json\r\n" if body else ""
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{kind}"
                f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        else:
            await self.reader.read()  # the body ends with the connection
            headers["connection"] = "close"
        if headers.get("connection") == "close":
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def request_for(endpoint: str, rng: random.Random, info: dict) -> tuple[str, str, bytes]:
    """(method, path, body) of one request of the mix."""
    extent, dims = info["extent"], info["latent_dim"]

    def z() -> list[float]:
        return [round(rng.uniform(-extent, extent), 3) for _ in range(dims)]

    if endpoint == "page":
        return "GET", rng.choice(PAGE_FILES), b""
    if endpoint in ("info", "points"):
        return "GET", f"/api/{endpoint}", b""
    if endpoint == "decode":
        body = {"z": z()}
    elif endpoint == "encode":
        pixels = 1
        for side in info["image_shape"]:
            pixels *= side
        body = {"pixels": [round(rng.random(), 3) for _ in range(pixels)]}
    else:
        body = {"a": z(), "b": z(), "steps": 10}
    return "POST", f"/api/{endpoint}", json.dumps(body).encode()


async def client_loop(port, rng, info, stop_at, budget, timeout, records):
    client, names, weights = Client(port), list(MIX), list(MIX.values())
    try:
        while time.monotonic() < stop_at and budget["left"] > 0:
            budget["left"] -= 1
            endpoint = rng.choices(names, weights)[0]
            method, path, body = request_for(endpoint, rng, info)
            start = time.perf_counter()
            try:
                ok = await asyncio.wait_for(client.request(method, path, body), timeout) == 200
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError,
                    IndexError):  # fmt: skip
                ok = False
                client.close()
            records.append((endpoint, time.perf_counter() - start, ok))
    finally:
        client.close()


async def load(port: int, info: dict, args) -> tuple[list, float]:
    records: list[tuple[str, float, bool]] = []
    budget = {"left": args.max_requests}
    start = time.monotonic()
    stop_at = start + args.seconds
    await asyncio.gather(*[
        client_loop(port, random.Random(args.seed * 1000 + i), info, stop_at, budget,
                    args.timeout, records)
        for i in range(args.clients)
    ])  # fmt: skip
    return records, time.monotonic() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(records: list, seconds: float) -> dict:
    per = {}
    for endpoint in MIX:
        times = [t for e, t, _ in records if e == endpoint]
        errors = sum(1 for e, _, ok in records if e == endpoint and not ok)
        per[endpoint] = {"requests": len(times), "errors": errors,
                         "p50_ms": 1000 * percentile(times, 0.5) if times else None,
                         "p99_ms": 1000 * percentile(times, 0.99) if times else None}  # fmt: skip
    errors = sum(1 for *_, ok in records if not ok)
    return {"requests": len(records), "errors": errors, "seconds": seconds,
            "requests_per_s": len(records) / seconds, "endpoints": per}  # fmt: skip


def measure(kinds: list[str], run: Path, args) -> dict[str, dict]:
    """Every server started at once, then loaded in turns: `--rounds` turns each of an equal
    share of `--seconds`, the order reversed every round, so that what else runs on the
    machine weighs on each alike."""
    servers = {kind: start_server(kind, run) for kind in kinds}
    records = {kind: [] for kind in kinds}
    seconds = dict.fromkeys(kinds, 0.0)
    rates = {kind: [] for kind in kinds}
    try:
        info = asyncio.run(fetch_info(servers[kinds[0]][1]))
        before = {kind: rss_mb(proc.pid) for kind, (proc, _) in servers.items()}
        turn = argparse.Namespace(**{**vars(args), "seconds": args.seconds / args.rounds,
                                     "max_requests": args.max_requests // args.rounds})  # fmt: skip
        for number in range(args.rounds):
            for kind in kinds if number % 2 == 0 else kinds[::-1]:
                got, spent = asyncio.run(load(servers[kind][1], info, turn))
                records[kind] += got
                seconds[kind] += spent
                rates[kind].append(len(got) / spent)
        after = {kind: rss_mb(proc.pid) for kind, (proc, _) in servers.items()}
    finally:
        codes = {kind: stop(proc) for kind, (proc, _) in servers.items()}
    results = {}
    for kind in kinds:
        result = summarise(records[kind], seconds[kind])
        result.update(requests_per_s_by_round=rates[kind], rss_mb_before=before[kind],
                      rss_mb_after=after[kind], rss_growth_mb=after[kind] - before[kind],
                      exit_code_after_sigterm=codes[kind])  # fmt: skip
        results[kind] = result
    return results


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM, then the exit code (a kill after 30 s: a server that does not stop)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(30)


async def fetch_info(port: int) -> dict:
    """/api/info (the server printed its URL once bound: it answers)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    body = await reader.readexactly(length)
    writer.close()
    return json.loads(body)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="a trained run (default: train a small VAE first)")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60.0, help="of load on each server")
    p.add_argument("--rounds", type=int, default=4, help="turns each server's load is split in")
    p.add_argument("--max-requests", type=int, default=1_000_000)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    p.add_argument("--server", choices=("both", "waitress", "werkzeug"), default="both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = parse(given)
    servers = ["waitress", "werkzeug"] if args.server == "both" else [args.server]
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or train_run(Path(tmp))
        load_before = os.getloadavg()
        results = measure(servers, run, args)
    limits = ServerLimits()
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": {"processor": first_model_name(), "cpu_count": os.cpu_count()},
        "seed": args.seed,
        "command": " ".join(["python benchmarks/serve_load.py", *given]),
        "settings": {
            "clients": args.clients,
            "seconds": args.seconds,
            "max_requests": args.max_requests,
            "rounds": args.rounds,
            "timeout_s": args.timeout,
            "mix": MIX,
            "run": str(args.run) if args.run else "vaelab train vae --max-steps 200",
            "waitress_threads": limits.threads,
            "waitress_connection_limit": limits.connection_limit,
        },
        "load_average_before": list(load_before),
        "versions": {"vaelab": vaelab.__version__, "python": platform.python_version()},
        "servers": results,
    }
    atomic_write_json(args.out, result)
    for kind, r in results.items():
        p99 = r["endpoints"]["decode"]["p99_ms"] or float("nan")
        print(f"{kind}: {r['requests_per_s']:.0f} requests/s, {r['errors']} errors, decode "
              f"p99 {p99:.1f} ms, RSS {r['rss_growth_mb']:+.1f} MB")  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
