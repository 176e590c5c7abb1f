"""`vaelab serve`'s production server (waitress, serve/server.py) on 127.0.0.1: its limits, its
own refusals in JSON, and a graceful stop that lets requests in flight finish, in-process and
on SIGTERM / Ctrl-C of a real `vaelab serve`. Every socket has a time-out; no loop is unbounded.
"""

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_serve_api import explorer_for
from vaelab.cli import main
from vaelab.serve import make_app_server, server_url
from vaelab.serve.app import CSP
from vaelab.serve.server import ServerLimits

TIMEOUT = 10  # seconds any socket of these tests waits before it fails
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def vae():
    return explorer_for("vae")


@contextmanager
def running(explorer, limits: ServerLimits | None = None):
    """The real server on 127.0.0.1, a free port, looping in a thread; yields it."""
    server = make_app_server(explorer, "127.0.0.1", 0, limits)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(TIMEOUT)


@pytest.fixture(scope="module")
def server(vae):
    with running(vae) as server:
        yield server


def request(port: int, method: str, path: str, body: bytes | None = None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes) -> tuple[int, dict, bytes]:
    """Send raw bytes, read until the server closes; the status, headers and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def assert_json_error(status: int, headers: dict, body: bytes, code: int) -> str:
    assert status == code, body
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    answer = json.loads(body)
    assert set(answer) == {"error"} and "Traceback" not in body.decode()
    return answer["error"]


def test_port_0_binds_a_free_port_and_the_url_names_it(server):
    assert server.port > 0 and server_url(server) == f"http://127.0.0.1:{server.port}/"
    status, headers, body = request(server.port, "GET", "/")
    assert status == 200 and b'<canvas id="plane"' in body
    assert headers["Content-Security-Policy"] == CSP
    body = json.dumps({"z": [0, 1]}).encode()
    status, _, body = request(server.port, "POST", "/api/decode", body, JSON)
    assert status == 200 and json.loads(body)["image"].startswith("data:image/png;base64,")


def test_the_host_guard_checks_the_bound_port(server):
    other = server.port + 1 if server.port < 65535 else server.port - 1
    for host in (f"127.0.0.1:{other}", "evil.example", f"evil.example:{server.port}"):
        status, headers, body = request(server.port, "GET", "/api/info", headers={"Host": host})
        assert_json_error(status, headers, body, 403)
    # HTTP/1.0 without a Host header: the server's own name is no address of this server
    status, headers, body = raw_exchange(server.port, b"GET /api/info HTTP/1.0\r\n\r\n")
    assert_json_error(status, headers, body, 403)


RAW_REFUSALS = [
    (b"GARBAGE\r\n\r\n", 400, "Bad Request"),
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n", 431, ""),
    (b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
     b"Content-Length: 2000000\r\n\r\n", 413, "exceeds max_body"),
    (b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n", 400, ""),
    (b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"zz\r\n", 400, ""),
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n", 400, ""),
    (b"GET /\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, ""),
]  # fmt: skip


@pytest.mark.parametrize("data, code, message", RAW_REFUSALS)
def test_what_the_server_refuses_itself_is_a_json_error(vae, data, code, message):
    # Headers over 2 KB that arrive in one read: the server reads them all before it answers
    # (bytes left unread when it closes would reset the connection before the answer).
    with running(vae, ServerLimits(header_bytes=2048)) as server:
        status, headers, body = raw_exchange(server.port, data)
    assert message in assert_json_error(status, headers, body, code)


def test_bodies_under_the_hard_cap_reach_the_apps_own_413(server):
    body = json.dumps({"z": [0, 0], "pad": "x" * 100_000}).encode()
    status, headers, answer = request(server.port, "POST", "/api/decode", body, JSON)
    assert "over 65536 bytes" in assert_json_error(status, headers, answer, 413)
    chunked = b"".join(
        f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in [b"[" + b"0," * 40_000, b"0]"]
    )
    host = f"127.0.0.1:{server.port}".encode()
    head = (b"POST /api/decode HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: application/json"
            b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")  # fmt: skip
    status, headers, answer = raw_exchange(server.port, head + chunked + b"0\r\n\r\n")
    assert "over 65536 bytes" in assert_json_error(status, headers, answer, 413)


def test_a_stalled_client_is_cut_off_after_the_channel_timeout(vae):
    limits = ServerLimits(channel_timeout=1, cleanup_interval=1)
    with running(vae, limits) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as slow:
            slow.sendall(b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Len")
            # Closed by the server (a hang fails at TIMEOUT), maybe with the partial request unread.
            with contextlib.suppress(ConnectionResetError):
                assert slow.recv(100) == b""
        status, _, _ = request(server.port, "GET", "/api/info")  # the server goes on
        assert status == 200


def test_past_the_connection_limit_clients_wait_and_are_then_served(vae):
    with running(vae, ServerLimits(connection_limit=2)) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
                for _ in range(2)]  # fmt: skip
        waiting = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        waiting.connect()  # in the kernel's backlog
        waiting.request("GET", "/api/info")
        for sock in idle:
            sock.close()
        assert waiting.getresponse().status == 200
        waiting.close()


def test_shutdown_lets_a_request_in_flight_finish(vae, monkeypatch):
    started, release = threading.Event(), threading.Event()
    decode = vae.decode

    def slow_decode(*args, **kwargs):
        started.set()
        release.wait(TIMEOUT)
        return decode(*args, **kwargs)

    monkeypatch.setattr(vae, "decode", slow_decode)
    server = make_app_server(vae, "127.0.0.1", 0)
    loop = threading.Thread(target=server.serve_forever, daemon=True)
    loop.start()
    answers = []
    client = threading.Thread(target=lambda: answers.append(request(
        server.port, "POST", "/api/decode", b'{"z": [0, 0]}', JSON
    )))  # fmt: skip
    client.start()
    assert started.wait(TIMEOUT)
    stopper = threading.Thread(target=server.shutdown)
    stopper.start()
    release.set()
    for thread in (client, stopper, loop):
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    assert answers[0][0] == 200 and b"image/png" in answers[0][2]
    with pytest.raises(OSError):  # the listening socket is closed
        socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT).close()


# ---- a real `vaelab serve`, stopped by a signal while a request is in flight

SLOW_SERVE = """
import sys, time
from vaelab.serve import Explorer
decode = Explorer.decode
def slow_decode(self, *args, **kwargs):
    print("DECODING", flush=True)
    time.sleep(1.0)
    return decode(self, *args, **kwargs)
Explorer.decode = slow_decode
from vaelab.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("serve") / "run"
    args = ["--latent-dim", "2", "--hidden", "32", "--max-steps", "5", "--quiet", "--no-report"]
    assert main(["train", "vae", "--out", str(run), *args]) == 0
    return run


def read_line_with(proc: subprocess.Popen, text: str) -> str:
    for _ in range(50):  # the lines before it: a few at most
        line = proc.stdout.readline()
        if text in line or not line:
            return line
    return ""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_vaelab_serve_after_the_request_in_flight(run_dir, sig):
    argv = [sys.executable, "-c", SLOW_SERVE, "serve", str(run_dir), "--port", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    try:
        url = read_line_with(proc, "serving")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        answers = []
        client = threading.Thread(target=lambda: answers.append(request(
            port, "POST", "/api/decode", b'{"z": [0, 0]}', JSON
        )))  # fmt: skip
        client.start()
        assert "DECODING" in read_line_with(proc, "DECODING")
        proc.send_signal(sig)
        client.join(TIMEOUT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
    assert answers and answers[0][0] == 200, err
    assert proc.returncode == 0 and "stopped" in out and "Traceback" not in err


# ---- a few hostile requests through the real server (the rest: tests/test_serve_fuzz.py)

HEADER_TEXT = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW"]),
    path=st.sampled_from(["/", "/api/info", "/api/points", "/api/decode", "/api/encode",
                          "/api/interpolate", "/static/app.js", "/nope", "/%ff", "/.."]),
    body=st.binary(max_size=300),
    content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; x"]),
    extra=HEADER_TEXT,
)  # fmt: skip
def test_fuzz_the_real_server(server, method, path, body, content_type, extra):
    headers = {"Content-Type": content_type, "X-Extra": extra}
    headers = {k: v for k, v in headers.items() if v}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value.encode("latin-1"))
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        status, answer = response.status, response.read()
    finally:
        conn.close()
    assert status < 500, answer
    if status != 200 and method != "HEAD":
        assert set(json.loads(answer)) == {"error"}
    assert b"Traceback" not in answer
