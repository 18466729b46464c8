"""Strict request parsing (RFC 9112 / 9110): every malformed request is
rejected with the right status, the connection is closed, nothing reaches
the upstream, and meshgate keeps serving."""
import pytest

from conftest import (Client, MeshgateFactory, Upstream, build_request, cluster,
                      http_request)

H = b"Host: t\r\n"


def req(head_lines, body=b"", start=b"POST /api/m HTTP/1.1"):
    return start + b"\r\n" + b"".join(l + b"\r\n" for l in head_lines) + b"\r\n" + body


CHUNKED = b"Transfer-Encoding: chunked"

# (id, raw request, acceptable statuses, head-level error?)
# head-level errors must never reach the upstream.
CASES = [
    # --- framing: Content-Length / Transfer-Encoding --------------------
    ("cl_and_te", req([b"Host: t", b"Content-Length: 5", CHUNKED], b"0\r\n\r\n"), {400}, True),
    ("te_and_cl", req([b"Host: t", CHUNKED, b"Content-Length: 5"], b"0\r\n\r\n"), {400}, True),
    ("cl_duplicate_differs", req([b"Host: t", b"Content-Length: 5", b"Content-Length: 6"], b"hello!"), {400}, True),
    ("cl_list_differs", req([b"Host: t", b"Content-Length: 5, 6"], b"hello!"), {400}, True),
    ("cl_plus", req([b"Host: t", b"Content-Length: +5"], b"hello"), {400}, True),
    ("cl_minus", req([b"Host: t", b"Content-Length: -1"]), {400}, True),
    ("cl_hex", req([b"Host: t", b"Content-Length: 0x10"], b"x" * 16), {400}, True),
    ("cl_overflow", req([b"Host: t", b"Content-Length: 99999999999999999999999"]), {400}, True),
    ("cl_overflow_2_64", req([b"Host: t", b"Content-Length: 18446744073709551621"]), {400}, True),
    ("cl_empty", req([b"Host: t", b"Content-Length: "]), {400}, True),
    ("cl_inner_space", req([b"Host: t", b"Content-Length: 1 0"], b"x" * 10), {400}, True),
    ("cl_alpha", req([b"Host: t", b"Content-Length: abc"]), {400}, True),
    ("cl_decimal_point", req([b"Host: t", b"Content-Length: 5.0"], b"hello"), {400}, True),
    ("te_gzip", req([b"Host: t", b"Transfer-Encoding: gzip"], b"xx"), {400, 501}, True),
    ("te_chunked_not_final", req([b"Host: t", b"Transfer-Encoding: chunked, gzip"], b"0\r\n\r\n"), {400, 501}, True),
    ("te_gzip_chunked", req([b"Host: t", b"Transfer-Encoding: gzip, chunked"], b"0\r\n\r\n"), {400, 501}, True),
    ("te_chunked_chunked", req([b"Host: t", b"Transfer-Encoding: chunked, chunked"], b"0\r\n\r\n"), {400}, True),
    ("te_two_fields", req([b"Host: t", CHUNKED, CHUNKED], b"0\r\n\r\n"), {400}, True),
    ("te_empty", req([b"Host: t", b"Transfer-Encoding: "], b"0\r\n\r\n"), {400, 501}, True),
    ("te_chunkedx", req([b"Host: t", b"Transfer-Encoding: chunkedx"], b"0\r\n\r\n"), {400, 501}, True),
    ("te_in_http10", req([b"Host: t", CHUNKED], b"0\r\n\r\n", start=b"POST /api/m HTTP/1.0"), {400}, True),
    # --- field syntax -----------------------------------------------------
    ("space_before_colon", req([b"Host : t"]), {400}, True),
    ("space_before_colon_cl", req([b"Host: t", b"Content-Length : 5"], b"hello"), {400}, True),
    ("tab_before_colon", req([b"Host: t", b"X-A\t: b"]), {400}, True),
    ("obs_fold_space", req([b"Host: t", b"X-A: b", b" c"]), {400}, True),
    ("obs_fold_tab", req([b"Host: t", b"X-A: b", b"\tc"]), {400}, True),
    ("leading_ws_first_field", req([b" Host: t"]), {400}, True),
    ("bare_cr_in_value", req([b"Host: t", b"X-A: b\rc"]), {400}, True),
    ("bare_cr_end_of_value", req([b"Host: t", b"X-A: b\r"]), {400}, True),
    ("bare_cr_in_request_line", b"GET /api/m\r HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("bare_cr_in_name", req([b"Host: t", b"X\rA: b"]), {400}, True),
    ("nul_in_value", req([b"Host: t", b"X-A: a\x00b"]), {400}, True),
    ("ctl_01_in_value", req([b"Host: t", b"X-A: a\x01b"]), {400}, True),
    ("ctl_esc_in_value", req([b"Host: t", b"X-A: a\x1bb"]), {400}, True),
    ("del_in_value", req([b"Host: t", b"X-A: a\x7fb"]), {400}, True),
    ("nul_in_name", req([b"Host: t", b"X\x00A: b"]), {400}, True),
    ("paren_in_name", req([b"Host: t", b"X(A): b"]), {400}, True),
    ("space_in_name", req([b"Host: t", b"X A: b"]), {400}, True),
    ("quote_in_name", req([b"Host: t", b"X\"A: b"]), {400}, True),
    ("slash_in_name", req([b"Host: t", b"X/A: b"]), {400}, True),
    ("high_byte_in_name", req([b"Host: t", b"X\x80A: b"]), {400}, True),
    ("empty_name", req([b"Host: t", b": b"]), {400}, True),
    ("no_colon", req([b"Host: t", b"NoColonHere"]), {400}, True),
    # --- Host ---------------------------------------------------------------
    ("missing_host", req([b"X-A: b"], start=b"GET /api/m HTTP/1.1"), {400}, True),
    ("duplicate_host", req([b"Host: a", b"Host: b"], start=b"GET /api/m HTTP/1.1"), {400}, True),
    ("duplicate_host_http10", req([b"Host: a", b"Host: b"], start=b"GET /api/m HTTP/1.0"), {400}, True),
    # --- request line / target ----------------------------------------------
    ("target_no_slash", b"GET foo HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("target_fragment", b"GET /api/a#frag HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("target_del", b"GET /api/a\x7f HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("target_high_bytes", b"GET /api/\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("target_nul", b"GET /api/a\x00b HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("target_lt", b"GET /api/a<b HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("target_dquote", b"GET /api/a\"b HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("target_asterisk_get", b"GET * HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("target_authority_get", b"GET example.com:80 HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("target_bad_scheme", b"GET ftp://example.com/api/x HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("double_space", b"GET  /api/m HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("trailing_space", b"GET /api/m HTTP/1.1 \r\nHost: t\r\n\r\n", {400}, True),
    ("tab_separator", b"GET\t/api/m HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("empty_method", b" /api/m HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("bad_method_char", b"G(T /api/m HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("space_in_target", b"GET /api/a b HTTP/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("missing_version", b"GET /api/m\r\nHost: t\r\n\r\n", {400}, True),
    ("version_lowercase", b"GET /api/m http/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("version_no_dot", b"GET /api/m HTTP/11\r\nHost: t\r\n\r\n", {400}, True),
    ("version_junk", b"GET /api/m HTTP/1.1x\r\nHost: t\r\n\r\n", {400}, True),
    ("version_major_only", b"GET /api/m HTTP/1\r\nHost: t\r\n\r\n", {400}, True),
    ("version_https", b"GET /api/m HTTPS/1.1\r\nHost: t\r\n\r\n", {400}, True),
    ("version_2_0", b"GET /api/m HTTP/2.0\r\nHost: t\r\n\r\n", {505}, True),
    ("version_3_0", b"GET /api/m HTTP/3.0\r\nHost: t\r\n\r\n", {505}, True),
    ("version_0_9", b"GET /api/m HTTP/0.9\r\nHost: t\r\n\r\n", {400, 505}, True),
    # --- chunked framing ---------------------------------------------------------
    ("chunk_size_not_hex", req([H[:-2], CHUNKED], b"zz\r\nhello\r\n0\r\n\r\n"), {400}, False),
    ("chunk_size_negative", req([H[:-2], CHUNKED], b"-1\r\nhello\r\n0\r\n\r\n"), {400}, False),
    ("chunk_size_0x", req([H[:-2], CHUNKED], b"0x5\r\nhello\r\n0\r\n\r\n"), {400}, False),
    ("chunk_size_empty", req([H[:-2], CHUNKED], b"\r\nhello\r\n0\r\n\r\n"), {400}, False),
    ("chunk_size_overflow", req([H[:-2], CHUNKED], b"10000000000000000\r\nhello\r\n0\r\n\r\n"), {400}, False),
    ("chunk_size_leading_space", req([H[:-2], CHUNKED], b" 5\r\nhello\r\n0\r\n\r\n"), {400}, False),
    ("chunk_data_too_long", req([H[:-2], CHUNKED], b"5\r\nhelloXX\r\n0\r\n\r\n"), {400}, False),
    ("chunk_data_missing_crlf", req([H[:-2], CHUNKED], b"5\r\nhello0\r\n\r\n"), {400}, False),
    ("chunk_bare_lf_size_line", req([H[:-2], CHUNKED], b"5\nhello\r\n0\r\n\r\n"), {400}, False),
    ("chunk_bare_cr_size_line", req([H[:-2], CHUNKED], b"5\rhello\r\n0\r\n\r\n"), {400}, False),
    ("chunk_ext_empty", req([H[:-2], CHUNKED], b"5;\r\nhello\r\n0\r\n\r\n"), {400}, False),
    ("chunk_ext_no_name", req([H[:-2], CHUNKED], b"5;=a\r\nhello\r\n0\r\n\r\n"), {400}, False),
    ("chunk_ext_empty_value", req([H[:-2], CHUNKED], b"5;a=\r\nhello\r\n0\r\n\r\n"), {400}, False),
    ("chunk_ext_unterminated_quote", req([H[:-2], CHUNKED], b"5;a=\"x\r\nhello\r\n0\r\n\r\n"), {400}, False),
    ("chunk_ext_space_in_name", req([H[:-2], CHUNKED], b"5;a b\r\nhello\r\n0\r\n\r\n"), {400}, False),
    ("chunk_ext_nul", req([H[:-2], CHUNKED], b"5;a=b\x00\r\nhello\r\n0\r\n\r\n"), {400}, False),
    ("chunk_ext_too_long", req([H[:-2], CHUNKED], b"5;a=" + b"b" * 5000 + b"\r\nhello\r\n0\r\n\r\n"), {400}, False),
    ("trailer_no_colon", req([H[:-2], CHUNKED], b"5\r\nhello\r\n0\r\nBad Trailer\r\n\r\n"), {400}, False),
    ("trailer_space_before_colon", req([H[:-2], CHUNKED], b"5\r\nhello\r\n0\r\nX-T : v\r\n\r\n"), {400}, False),
    ("trailer_obs_fold", req([H[:-2], CHUNKED], b"5\r\nhello\r\n0\r\nX-T: v\r\n w\r\n\r\n"), {400}, False),
    ("trailer_nul", req([H[:-2], CHUNKED], b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n"), {400}, False),
]


@pytest.fixture(scope="module")
def strict_gw(tmp_path_factory):
    up = Upstream(name="echo")
    f = MeshgateFactory(tmp_path_factory.mktemp("malformed"))
    m = f.simple(up)
    m.echo = up
    yield m
    problems = f.cleanup()
    up.close()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def assert_alive(m):
    assert m.alive(), f"meshgate died\n{m.stderr_tail()}"
    r = http_request(m.port, "GET", "/api/alive")
    assert r.status == 200, r


@pytest.mark.parametrize("name,raw,statuses,head_level", CASES, ids=[c[0] for c in CASES])
def test_malformed_request_rejected(strict_gw, name, raw, statuses, head_level):
    m = strict_gw
    before = len(m.echo.heads)
    with Client(m.port) as c:
        c.send(raw)
        r = c.read_response(timeout=5)
        assert r.status in statuses, f"{name}: sent {raw!r}, got {r!r}"
        assert c.wait_closed(5), f"{name}: connection not closed after {r.status}"
    if head_level:
        assert len(m.echo.heads) == before, f"{name}: malformed request reached the upstream"
    assert_alive(m)


def test_malformed_after_valid_request_on_same_connection(strict_gw):
    """A keep-alive connection: a good request, then a bad one -> 200, 400, close."""
    with Client(strict_gw.port) as c:
        c.send(build_request("GET", "/api/ok") + b"GET /api/bad HTTP/1.1\r\nHost : t\r\n\r\n")
        assert c.read_response().status == 200
        assert c.read_response().status == 400
        assert c.wait_closed(5)


def test_valid_but_unusual_requests_accepted(strict_gw):
    """Things the strict parser must still accept."""
    ok = [
        b"GET /api/a HTTP/1.1\r\nHost: t\r\nX-Tab:\tv\t\r\n\r\n",           # HTAB in OWS
        b"GET /api/a HTTP/1.1\r\nhOsT: t\r\n\r\n",                            # case-insensitive names
        b"GET /api/a?q=1&r=%2F HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /api/a;p=1/b:c@d!$&'()*+,= HTTP/1.1\r\nHost: t\r\n\r\n",       # RFC 3986 sub-delims
        b"GET http://t/api/abs HTTP/1.1\r\nHost: t\r\n\r\n",                  # absolute-form
        b"GET /api/a HTTP/1.1\r\nHost: t\r\nX-Opaque: \x80\xff\r\n\r\n",      # obs-text in values
        b"POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"POST /api/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5 ; a=b\r\nhello\r\n0\r\n\r\n",                                    # BWS around ext
        b"POST /api/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"000005\r\nhello\r\n0000\r\n\r\n",                                  # leading zeros
        b"POST /api/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"A\r\n0123456789\r\n0\r\n\r\n",                                     # upper-case hex
    ]
    for raw in ok:
        with Client(strict_gw.port) as c:
            c.send(raw)
            r = c.read_response(timeout=5)
            assert r.status == 200, f"sent {raw!r}, got {r!r}"


# --- limits ------------------------------------------------------------------------

def _status(port, raw, timeout=5):
    with Client(port) as c:
        c.send(raw, ignore_errors=True)
        r = c.read_response(timeout=timeout)
        closed = c.wait_closed(5) if r.status >= 400 else None
        return r, closed


def test_request_line_over_8k_is_414(strict_gw):
    r, closed = _status(strict_gw.port, b"GET /api/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert r.status == 414, r
    assert closed


def test_request_line_just_under_8k_ok(strict_gw):
    target = b"/api/" + b"a" * (8192 - 200)
    r, _ = _status(strict_gw.port, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert r.status == 200, r
    assert r.json()["target"] == target.decode()


def test_long_request_line_sent_slowly_is_414(strict_gw):
    """414 must be decided as soon as the line is too long, not when it ends."""
    with Client(strict_gw.port) as c:
        c.send(b"GET /api/" + b"a" * 10000)  # no end of line
        r = c.read_response(timeout=5)
        assert r.status == 414
        assert c.wait_closed(5)


def test_101_fields_is_431(strict_gw):
    fields = [b"Host: t"] + [b"X-F%d: v" % i for i in range(100)]
    r, closed = _status(strict_gw.port, req(fields, start=b"GET /api/m HTTP/1.1"))
    assert r.status == 431, r
    assert closed


def test_100_fields_ok(strict_gw):
    fields = [b"Host: t"] + [b"X-F%d: v" % i for i in range(99)]
    r, _ = _status(strict_gw.port, req(fields, start=b"GET /api/m HTTP/1.1"))
    assert r.status == 200, r


def test_header_section_over_32k_is_431(strict_gw):
    fields = [b"Host: t"] + [b"X-Big%d: " % i + b"v" * 7000 for i in range(5)]
    r, closed = _status(strict_gw.port, req(fields, start=b"GET /api/m HTTP/1.1"))
    assert r.status == 431, r
    assert closed


def test_header_section_under_32k_ok(strict_gw):
    fields = [b"Host: t"] + [b"X-Big%d: " % i + b"v" * 7000 for i in range(4)]
    r, _ = _status(strict_gw.port, req(fields, start=b"GET /api/m HTTP/1.1"))
    assert r.status == 200, r


def test_single_20k_field_ok(strict_gw):
    r, _ = _status(strict_gw.port, req([b"Host: t", b"X-Long: " + b"q" * 20000],
                                       start=b"GET /api/m HTTP/1.1"))
    assert r.status == 200, r


def test_endless_header_section_is_431(strict_gw):
    with Client(strict_gw.port) as c:
        c.send(b"GET /api/m HTTP/1.1\r\nHost: t\r\n" + b"X-A: " + b"b" * 40000, ignore_errors=True)
        r = c.read_response(timeout=5)
        assert r.status == 431
        assert c.wait_closed(5)


def test_configured_limits(mg, echo):
    m = mg.simple(echo, limits={"max_request_line": 1024, "max_header_bytes": 4096,
                                "max_headers": 10})
    r, _ = _status(m.port, b"GET /api/" + b"a" * 1100 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert r.status == 414
    r, _ = _status(m.port, b"GET /api/" + b"a" * 900 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert r.status == 200
    r, _ = _status(m.port, req([b"Host: t"] + [b"X-%d: v" % i for i in range(10)],
                               start=b"GET /api/m HTTP/1.1"))
    assert r.status == 431
    r, _ = _status(m.port, req([b"Host: t"] + [b"X-%d: v" % i for i in range(9)],
                               start=b"GET /api/m HTTP/1.1"))
    assert r.status == 200
    r, _ = _status(m.port, req([b"Host: t", b"X-Big: " + b"v" * 5000], start=b"GET /api/m HTTP/1.1"))
    assert r.status == 431


@pytest.mark.parametrize("raw,status", [
    (b"GET /api/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    (b"GET /api/m HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(120)) + b"\r\n", 431),
    (b"GET /api/m HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    (b"GET /api/m HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", 400),
], ids=["414", "431", "505", "400"])
def test_error_responses_have_json_body(strict_gw, raw, status):
    with Client(strict_gw.port) as c:
        c.send(raw)
        r = c.read_response(timeout=5)
    assert r.status == status
    assert "json" in r.header("content-type", "").lower(), r
    d = r.json()
    assert d.get("status") == status and isinstance(d.get("error"), str), d
