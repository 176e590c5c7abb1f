"""The explorer's API fuzzed with Hypothesis through Flask's test client (a few more through the
real server: tests/test_serve_server.py). Whatever arrives, every answer is a 200 or a 4xx with
a JSON {"error": "..."} body: never a 5xx, never a traceback.

Each fuzzer sends a fixed number of requests (max_examples; no deadline), over 2,000 in all,
counted in SENT and checked by the last test.
"""

import json
import urllib.parse
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_serve_api import explorer_for
from vaelab.serve import create_app

SENT: Counter = Counter()  # fuzzer -> requests sent
ENDPOINTS = ["/api/decode", "/api/encode", "/api/interpolate"]
PATHS = ["/", "/api/info", "/api/points", *ENDPOINTS, "/static/app.js", "/static/style.css"]
FIELDS = ["z", "a", "b", "pixels", "label", "steps"]


@pytest.fixture(scope="module")
def client():
    return create_app(explorer_for("vae")).test_client()


@pytest.fixture(scope="module")
def cvae_client():
    return create_app(explorer_for("cvae")).test_client()


def fuzz(max_examples: int):
    return settings(max_examples=max_examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])  # fmt: skip


def send(client, name: str, method: str, path: str, **kwargs):
    """One request; its answer must be a 200 or a 4xx JSON error without a traceback."""
    SENT[name] += 1
    response = client.open(path, method=method, **kwargs)
    status = response.status_code
    assert status < 500, (status, response.data[:300])
    assert b"Traceback" not in response.data
    assert "Access-Control-Allow-Origin" not in response.headers  # no CORS, ever
    if method in ("HEAD", "OPTIONS"):  # no body (OPTIONS: Flask's own answer, its Allow header)
        return response
    if status != 200:
        answer = response.get_json(silent=True)
        assert isinstance(answer, dict) and set(answer) == {"error"}, response.data[:300]
        assert isinstance(answer["error"], str) and answer["error"]
    elif path.startswith("/api/"):
        assert isinstance(response.get_json(), dict)
    return response


def post_text(client, name: str, path: str, text: str | bytes, content_type="application/json"):
    return send(client, name, "POST", path, data=text, content_type=content_type)


# ---- values: any JSON, and hostile numbers written as JSON text

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_subnormal=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),  # fmt: skip
    max_leaves=30,
)
NUMBER_TOKENS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "1e999",
            "-1e999",
            "1e-999",
            "-0",
            "0.0",
            "1" + "0" * 400,
            "1" + "0" * 5000,
            "10.000000001",
            "-10.5",
            "true",
            "null",
            '"1"',
            "[]",
            "{}",
            "[0, 0]",
        ]
    ),  # fmt: skip
)


@st.composite
def latent_text(draw) -> str:
    """A JSON list of hostile number tokens (usually of the right length, 2)."""
    n = draw(st.one_of(st.just(2), st.integers(0, 4)))
    return "[" + ", ".join(draw(NUMBER_TOKENS) for _ in range(n)) + "]"


@st.composite
def structured_body(draw) -> str:
    """A JSON object with the API's keys, each holding a hostile value (as JSON text)."""
    fields = draw(st.lists(st.sampled_from(FIELDS), unique=True, min_size=1, max_size=4))
    parts = []
    for name in fields:
        value = draw(st.one_of(
            latent_text(),
            NUMBER_TOKENS,
            JSON_VALUES.map(lambda v: json.dumps(v, allow_nan=True)),
            st.integers(0, 800).map(lambda n: json.dumps([0.5] * n)),
        ))  # fmt: skip
        parts.append(f"{json.dumps(name)}: {value}")
    return "{" + ", ".join(parts) + "}"


@fuzz(400)
@given(path=st.sampled_from(ENDPOINTS), value=JSON_VALUES)
def test_fuzz_any_json_body(client, path, value):
    post_text(client, "any JSON", path, json.dumps(value, allow_nan=True))


@fuzz(500)
@given(path=st.sampled_from(ENDPOINTS), body=structured_body())
def test_fuzz_the_api_fields_with_hostile_values(client, path, body):
    post_text(client, "hostile fields", path, body)


@fuzz(200)
@given(path=st.sampled_from(ENDPOINTS), body=structured_body(), label=NUMBER_TOKENS)
def test_fuzz_a_conditional_models_labels(cvae_client, path, body, label):
    labelled = body[:-1] + (", " if body != "{}" else "") + f'"label": {label}}}'
    post_text(cvae_client, "labels", path, labelled)


@st.composite
def hostile_bytes(draw) -> bytes:
    """Deep nesting, long strings, cut JSON, bad UTF-8 and plain random bytes."""
    kind = draw(st.sampled_from(["nest", "long", "cut", "utf8", "random"]))
    if kind == "nest":
        depth = draw(st.integers(1, 50_000))
        return (draw(st.sampled_from(["[", '{"z":'])) * depth).encode()
    if kind == "long":
        return json.dumps({"z": "x" * draw(st.integers(0, 70_000))}).encode()
    if kind == "cut":
        text = json.dumps({"z": [0.5, -0.5], "label": 1, "steps": 3})
        return text[: draw(st.integers(0, len(text)))].encode()
    if kind == "utf8":
        good = b'{"z": [0, 0], "s": "'
        return good + draw(st.binary(min_size=1, max_size=20)) + b"\xff\xfe\xc3" + b'"}'
    return draw(st.binary(max_size=200))


@fuzz(300)
@given(path=st.sampled_from(ENDPOINTS), body=hostile_bytes())
def test_fuzz_bytes_that_are_not_json(client, path, body):
    post_text(client, "bad bytes", path, body)


METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"]
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data", "application/json; charset=latin-1", "", "APPLICATION/JSON",
                 "application/json; charset=utf-16", "application/problem+json"]  # fmt: skip


@fuzz(300)
@given(
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
    content_type=st.sampled_from(CONTENT_TYPES),
    body=st.one_of(st.just(b'{"z": [0, 0]}'), st.binary(max_size=100)),
)
def test_fuzz_methods_and_content_types(client, method, path, content_type, body):
    send(client, "methods", method, path, data=body, content_type=content_type or None)


HOST_TEXT = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=30)
ODD_PORTS = ["\u00b2", "8000\u00b2", "\u00b9\u00b2", " 80", "0x50", "+80", "8_000"]  # \u00b2: "²"
HOSTS = st.one_of(
    HOST_TEXT,
    st.builds(
        lambda name, port: f"{name}:{port}",
        st.sampled_from(["127.0.0.1", "localhost", "[::1]", "evil.example", ""]),
        st.one_of(st.integers(-5, 10**12).map(str), HOST_TEXT, st.sampled_from(ODD_PORTS)),
    ),
)


@fuzz(300)
@given(host=HOSTS, path=st.sampled_from(PATHS))
def test_fuzz_host_headers(client, host, path):
    method = "POST" if path in ENDPOINTS else "GET"
    send(client, "hosts", method, path, json={"z": [0, 0]} if method == "POST" else None,
         headers={"Host": host})  # fmt: skip


PATH_PIECES = st.sampled_from(["api", "static", "..", ".", "%2e%2e", "%2f", "%00", "%ff", "app.js",
                               "index.html", "decode", "info", "", "~", "%252e"])  # fmt: skip


@fuzz(200)
@given(
    pieces=st.lists(
        st.one_of(PATH_PIECES, st.text(max_size=10).map(urllib.parse.quote)), max_size=6
    ),
    query=st.text(max_size=20).map(urllib.parse.quote),
)
def test_fuzz_paths(client, pieces, query):
    # PATH_INFO as a WSGI server hands it over: %-decoded, bytes as latin-1
    path = urllib.parse.unquote_to_bytes("/" + "/".join(pieces)).decode("latin-1")
    overrides = {"PATH_INFO": path, "QUERY_STRING": query}
    send(client, "paths", "GET", "/", environ_overrides=overrides)


FUZZERS = 7


def test_the_fuzzers_sent_over_2000_requests():
    if len(SENT) < FUZZERS:
        pytest.skip(f"only {len(SENT)} of the {FUZZERS} fuzzers ran")
    print(dict(SENT), sum(SENT.values()))
    assert sum(SENT.values()) >= 2000
