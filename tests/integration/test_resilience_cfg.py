"""Resilience configuration through the real binary (CLI level only).

`meshgate check` must accept the seed with its CircuitBreaker (given the
fallback route of examples/seed-local.yaml), Spring CircuitBreaker/Retry
filters with resilience4j.* settings, and every native block; it must
refuse bad values with FILE:LINE:COL. `meshgate config print` must write
it all back as native YAML that loads to the same printout. What the proxy
does with these settings is tested elsewhere (end-to-end tests).
"""
import os
import re
import subprocess

import pytest

from conftest import MESHGATE, ROOT

SEED = os.path.join(ROOT, "examples", "seed-gateway.yaml")
SEED_LOCAL = os.path.join(ROOT, "examples", "seed-local.yaml")
ERR_RX = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<msg>\S.*)$", re.M)


def run_cli(*args, timeout=20):
    if not os.path.exists(MESHGATE):
        pytest.fail(f"meshgate binary not found at {MESHGATE}")
    p = subprocess.run([MESHGATE, *args], capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def check(tmp_path, text, name="cfg.yaml"):
    f = tmp_path / name
    f.write_text(text)
    return (*run_cli("check", "-c", str(f)), str(f))


SPRING = """\
spring:
  cloud:
    discovery: {client: {simple: {instances: {svc: [{uri: 'http://127.0.0.1:9001'}]}}}}
    gateway:
      routes:
        - id: users
          uri: lb://svc
          predicates: [Path=/api/users/**]
          filters:
            - name: CircuitBreaker
              args:
                name: users-cb
                fallbackUri: forward:/fallback/users
                statusCodes: [500, BAD_GATEWAY]
            - name: Retry
              args:
                retries: 2
                methods: GET,POST
                backoff: {firstBackoff: 10ms, maxBackoff: 100ms}
        - id: fallback
          uri: lb://svc
          predicates: [Path=/fallback/**]
resilience4j:
  circuitbreaker:
    configs:
      default: {slidingWindowSize: 10, minimumNumberOfCalls: 5, waitDurationInOpenState: 10s}
    instances:
      users-cb: {failureRateThreshold: 25, slowCallDurationThreshold: PT2S, registerHealthIndicator: true}
  timelimiter:
    instances:
      users-cb: {timeoutDuration: 3s}
"""

NATIVE = """\
clusters:
  users:
    endpoints: [127.0.0.1:9001, 127.0.0.1:9002]
    connection_pool: {max_connections: 100, max_requests: 1000, max_pending: 50}
    outlier_detection: {consecutive_5xx: 5, interval: 10s, base_ejection_time: 30s, max_ejection_percent: 50}
    retry_budget: {percent: 20, min_concurrency: 3}
    health_check: {path: /health, interval: 5s, timeout: 1s, expected_statuses: [200-399]}
    circuit_breaker: {failure_threshold: 5, timeout: 2s, reset_timeout: 30s}
routes:
  - id: users
    path: /api/users/**
    to: users
    circuit_breaker: {sliding_window_size: 20, failure_statuses: [500, 502-504], fallback: /fallback/users}
    retry: {attempts: 2, per_try_timeout: 1s, retry_on: [gateway-error, connect-failure, 503], backoff: {base: 25ms}}
  - id: users-fallback
    path: /fallback/users
    respond: {status: 503, headers: {Content-Type: application/json}, body: '{"error": "down"}'}
"""


def test_seed_with_its_local_file_checks():
    rc, out, err = run_cli("check", "-c", SEED, "-c", SEED_LOCAL)
    assert rc == 0, err
    assert "3 routes, 2 clusters" in out


def test_seed_config_print_shows_the_breaker():
    rc, out, err = run_cli("config", "print", "-c", SEED, "-c", SEED_LOCAL)
    assert rc == 0, err
    assert 'name: "user-service-cb"' in out
    assert 'fallback: "/fallback/users"' in out
    assert "time_limit: 1000" in out  # Resilience4j TimeLimiter's default applies to Spring's CircuitBreaker
    assert "respond:" in out and "status: 503" in out
    assert '- name: "CircuitBreaker"' not in out  # written as the native block instead


@pytest.mark.parametrize("text", [SPRING, NATIVE], ids=["spring", "native"])
def test_check_and_print_roundtrip(tmp_path, text):
    rc, out, err, path = check(tmp_path, text)
    assert rc == 0, err
    rc, printed, err = run_cli("config", "print", "-c", path)
    assert rc == 0, err
    again = tmp_path / "printed.yaml"
    again.write_text(printed)
    rc, printed2, err = run_cli("config", "print", "-c", str(again))
    assert rc == 0, err + printed
    assert printed2 == printed


def test_spring_values_reach_the_printout(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(SPRING)
    rc, out, err = run_cli("config", "print", "-c", str(f))
    assert rc == 0, err
    for want in ('name: "users-cb"', "sliding_window_size: 10", "minimum_calls: 5", "failure_rate_threshold: 25",
                 "slow_call_duration: 2000", "wait_in_open: 10000", "failure_statuses: [500, 502]",
                 "time_limit: 3000", '- name: "Retry"'):
        assert want in out, (want, out)


@pytest.mark.parametrize("text,line,col,msg", [
    ("resilience4j:\n  circuitbreaker:\n    instances:\n      x: {slidingWindowSiz: 5}\n", 4, 11,
     "unknown key 'slidingWindowSiz' in resilience4j.circuitbreaker.instances.x (did you mean slidingWindowSize?)"),
    ("resilience4j:\n  bulkhead: {}\n", 2, 3, "unknown key 'bulkhead' in resilience4j: meshgate reads"),
    ("resilience4j:\n  circuitbreaker:\n    configs:\n      default:\n        recordExceptions: [com.acme.Boom]\n",
     5, 28, "recordExceptions: unknown exception class 'com.acme.Boom'"),
    ("resilience4j:\n  timelimiter:\n    configs:\n      default: {timeoutDuration: soon}\n", 4, 34,
     "timeoutDuration: expected a duration"),
    (SPRING.replace("forward:/fallback/users", "lb://other"), 13, 30,
     "CircuitBreaker: fallbackUri: only forward:/path is supported"),
    (SPRING.replace("forward:/fallback/users", "forward:/nowhere"), 6, 11,
     "route 'users': circuit breaker fallback forward:/nowhere matches no other route"),
    (SPRING.replace("retries: 2", "retries: 0"), 17, 26, "Retry: retries: expected an integer 1..100"),
    (NATIVE.replace("sliding_window_size: 20", "sliding_window_size: 20, failure_threshold: 3"), 13, 44,
     "circuit_breaker: the simple form (failure_threshold, timeout, reset_timeout) cannot be mixed"),
    (NATIVE.replace("retry_on: [gateway-error", "retry_on: [gateway-errors"), 14, 58,
     "retry_on: unknown value 'gateway-errors'"),
    (NATIVE.replace("max_ejection_percent: 50", "max_ejection_percent: 150"), 5, 107,
     "max_ejection_percent: '150' is out of range (0..100)"),
    (NATIVE.replace("expected_statuses: [200-399]", "expected_statuses: [200-999]"), 7, 82,
     "health_check.expected_statuses: expected a status 100..599"),
    (NATIVE.replace("    to: users\n    circuit_breaker", "    to: users\n    respond: {status: 200}\n    circuit_breaker"),
     13, 14, "a route takes exactly one destination: 'to', 'uri' or 'respond'"),
])
def test_bad_values_refused_with_position(tmp_path, text, line, col, msg):
    rc, out, err, path = check(tmp_path, text)
    assert rc == 1, out + err
    m = ERR_RX.search(err)
    assert m, err
    assert m["file"] == path
    assert (int(m["line"]), int(m["col"])) == (line, col), err
    assert m["msg"].startswith(msg), err
