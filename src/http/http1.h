/* http1: strict, incremental, zero-copy HTTP/1.1 message-head parser and
 * chunked codec (RFC 9112 / RFC 9110).
 *
 * Pure functions over caller-owned bytes: no allocation, no globals, safe
 * from any thread. Every slice in a parsed message points into the buffer
 * that was passed in; the caller keeps that buffer unchanged while it uses
 * the message. Errors are returned as the negative HTTP status the peer
 * should get (-400, -414, -431, -501, -505 for requests; any negative value
 * for a response means "invalid upstream response": answer 502). */
#ifndef MG_HTTP_HTTP1_H
#define MG_HTTP_HTTP1_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/slice.h"

#define MG_HTTP_MAX_HEADERS 128 /* hard ceiling on the configurable limit */

typedef enum {
    MG_METHOD_OTHER = 0, /* a valid token that is not one of the below */
    MG_METHOD_GET,
    MG_METHOD_HEAD,
    MG_METHOD_POST,
    MG_METHOD_PUT,
    MG_METHOD_DELETE,
    MG_METHOD_CONNECT,
    MG_METHOD_OPTIONS,
    MG_METHOD_TRACE,
    MG_METHOD_PATCH,
} mg_method_t;

typedef struct {
    uint32_t max_request_line; /* request line longer than this -> -414 (8192) */
    uint32_t max_header_bytes; /* whole head incl. start line -> -431 (32768) */
    uint32_t max_headers;      /* more fields than this -> -431 (100) */
} mg_http_limits_t;

extern const mg_http_limits_t mg_http_default_limits;

/* Per-field flags set by the parser. */
enum {
    MG_HDR_HOP = 1u << 0,     /* hop-by-hop: Connection, Keep-Alive, Proxy-Connection,
                                 TE, Trailer, Transfer-Encoding, Upgrade, Content-Length
                                 (framing is re-serialized), Expect, and every field
                                 named by a Connection token. Never forwarded as is. */
    MG_HDR_HOST = 1u << 1,    /* the Host field */
};

typedef struct {
    mg_slice_t name;  /* as sent (case preserved) */
    mg_slice_t value; /* leading/trailing OWS trimmed */
    uint32_t flags;   /* MG_HDR_* */
} mg_http_header_t;

typedef enum {
    MG_BODY_NONE = 0, /* no body (no framing header; HEAD/1xx/204/304 responses) */
    MG_BODY_LENGTH,   /* Content-Length: content_length bytes (may be 0) */
    MG_BODY_CHUNKED,  /* Transfer-Encoding: chunked */
    MG_BODY_EOF,      /* responses only: delimited by connection close */
} mg_body_kind_t;

/* Message-level flags. */
enum {
    MG_MSG_CONN_CLOSE = 1u << 0,      /* Connection: close present */
    MG_MSG_CONN_KEEPALIVE = 1u << 1,  /* Connection: keep-alive present */
    MG_MSG_CONN_UPGRADE = 1u << 2,    /* Connection: upgrade present */
    MG_MSG_EXPECT_CONTINUE = 1u << 3, /* Expect: 100-continue (case-insensitive) */
    MG_MSG_HAS_CL = 1u << 4,          /* a Content-Length field was present */
    MG_MSG_ABSOLUTE_FORM = 1u << 5,   /* request target was absolute-form */
};

typedef struct {
    /* Incremental state: zero the whole struct (mg_http_msg_reset) before the
     * first call for a new message, then call again with the same buffer
     * grown by newly read bytes. Scanning resumes where it stopped, so a
     * head arriving one byte at a time costs O(n), not O(n^2).
     * scan_pos == 0 means "fresh": the other scan_* fields are then
     * (re)initialized by the parser, so mg_http_msg_reset need not touch them. */
    size_t scan_pos;
    size_t scan_line;    /* private: start of the line being scanned */
    size_t scan_sl;      /* private: start of the start line (after skipped CRLFs) */
    size_t scan_sl_end;  /* private: offset of the LF ending the start line */
    uint32_t scan_phase; /* private: 0 before start line, 1 fields, 2 head complete */
    uint32_t scan_count; /* private: empty lines skipped / field lines seen */

    /* request line */
    mg_slice_t method;
    mg_method_t method_id;
    mg_slice_t target; /* exactly as sent */
    mg_slice_t path;   /* origin-form: the part before '?'; absolute-form: the
                          path after the authority ("/" if empty); "*" for
                          asterisk-form; the authority for CONNECT */
    mg_slice_t query;  /* after '?', without it; p == NULL when there was no '?' */
    mg_slice_t authority; /* absolute-form / authority-form authority, else empty */

    /* status line (responses) */
    int status;
    mg_slice_t reason;

    int version; /* 10 or 11 */

    mg_http_header_t headers[MG_HTTP_MAX_HEADERS];
    uint32_t nheaders;

    mg_slice_t host; /* value of the Host field (requests), empty if absent */
    mg_body_kind_t body;
    uint64_t content_length; /* valid when body == MG_BODY_LENGTH, or
                                MG_MSG_HAS_CL on a bodiless response */
    uint32_t flags;       /* MG_MSG_* */
    const char *error;    /* static text saying why parsing failed */
} mg_http_msg_t;

static inline void mg_http_msg_reset(mg_http_msg_t *m) { m->scan_pos = 0; m->nheaders = 0; m->flags = 0; m->error = NULL; }

/* Parse a request head from buf[0..len).
 * Returns the length of the head (> 0) once it is complete and valid,
 * 0 when more bytes are needed, or -status on error (see top of file).
 * Limits: NULL means mg_http_default_limits.
 * Validation (any failure -> -400 unless noted): method is a token; target
 * is origin-form, absolute-form (http/https), authority-form (CONNECT only)
 * or "*" (OPTIONS only) with only RFC 3986 characters (no CTL, space, '#',
 * or byte >= 0x80); version is exactly HTTP/1.0 or HTTP/1.1 (other
 * HTTP/x.y -> -505); field names are tokens with no whitespace before ':';
 * no obs-fold; no bare CR anywhere (a lone LF ends a line, per RFC 9112
 * 2.2); no NUL/CTL (other than HTAB) in values; Content-Length must be one
 * decimal value below 2^63 (identical repeats, also comma lists "5, 5", are
 * merged; differing ones, signs, hex, empty and overflow are rejected);
 * Transfer-Encoding (all TE fields taken as one list) must end in exactly
 * one "chunked" (case-insensitive, no parameters): other codings before it
 * ("gzip, chunked") -> -501 since codings are not decoded; "chunked" not
 * last or repeated, no "chunked" at all ("identity", "gzip"), empty or bad
 * syntax -> -400; TE only in HTTP/1.1; both CL and TE -> -400; HTTP/1.1
 * needs exactly one Host (0 or 2+ -> -400), HTTP/1.0 may have none but
 * never two. Also -400: Host values with bytes outside RFC 3986 reg-name /
 * IP-literal / port characters; userinfo ('@') in an absolute-form
 * authority; a CONNECT target that is not host ":" port (port 0..65535);
 * bad %-escapes in the target; a Connection value that is not a token list;
 * more than 4 empty lines before the request line. A start line whose first
 * byte cannot start a method fails at once (e.g. TLS sent to a plain port).
 * Limits: request line (without CRLF) over max_request_line -> -414 as soon
 * as one more byte than allowed is buffered; head over max_header_bytes, or
 * more than max_headers fields (ceiling MG_HTTP_MAX_HEADERS) -> -431, also
 * as soon as certain. The result never depends on how the input was split
 * across calls. */
int mg_http_parse_request(const char *buf, size_t len, mg_http_msg_t *m,
                          const mg_http_limits_t *lim);

/* Parse a response head. req_method is the method of the request this
 * answers: HEAD, and statuses 1xx/204/304 give body == MG_BODY_NONE; 2xx to
 * CONNECT too (a Content-Length is still validated and recorded with
 * MG_MSG_HAS_CL). Otherwise: TE ending in "chunked" -> MG_BODY_CHUNKED; TE
 * whose final coding is not chunked ("gzip") -> MG_BODY_EOF (RFC 9112 6.3
 * rule 4; note the coding itself is then not forwarded); CL ->
 * MG_BODY_LENGTH; neither -> MG_BODY_EOF. Errors (all returned as -502):
 * CL + TE, TE in HTTP/1.0, "chunked" repeated or not last, and the same
 * field rules as requests (no Host rules). Status line is
 * "HTTP/1.x SP 3DIGIT [SP reason]"; status 100..599; reason may be empty
 * or absent; no empty lines are skipped before it. */
int mg_http_parse_response(const char *buf, size_t len, mg_http_msg_t *m,
                           const mg_http_limits_t *lim, mg_method_t req_method);

/* Find a header by name (case-insensitive); NULL if absent. */
const mg_http_header_t *mg_http_find(const mg_http_msg_t *m, mg_slice_t name);

/* Text of a method id ("GET", ...); NULL for MG_METHOD_OTHER. */
const char *mg_method_name(mg_method_t id);

/* ---- chunked transfer coding ---- */

typedef struct {
    int state;          /* private */
    uint64_t remaining; /* private: data bytes left in the current chunk */
    uint32_t aux;       /* private: digits / extension / trailer byte counts */
    uint32_t ntrailers; /* private */
} mg_chunked_t;

static inline void mg_chunked_reset(mg_chunked_t *c) { c->state = 0; c->remaining = 0; c->aux = 0; c->ntrailers = 0; }

/* Decode chunked framing incrementally. Consumes bytes of buf[0..len) and
 * stores up to maxout data spans (pointing into buf) in out[]; *nout is the
 * count stored. Returns the number of bytes consumed (may be < len when out[]
 * fills or the message ends; call again with the rest), or -400 on invalid
 * framing: chunk-size not 1..16 hex digits or overflowing, bad extension
 * syntax (";" token ["=" (token / quoted-string)]), extension longer than
 * 4096 bytes, missing CRLF after data, bare CR or LF in framing lines,
 * trailer fields invalid or more than 64 of them / over 8 KiB.
 * Strict: chunk sizes >= 2^63 are rejected, and whitespace is only allowed
 * where RFC 9112 has BWS (before ';', around '=' in extensions) - "5 \r\n"
 * is rejected. Extension bytes are counted from the first ';' or BWS to the
 * CR. Resumable at any byte boundary; unconsumed bytes are only those after
 * the message or those not reached because out[] filled up.
 * *done becomes 1 once the last chunk and trailers (dropped) are consumed;
 * the bytes after that are not consumed. */
ssize_t mg_chunked_decode(mg_chunked_t *c, const char *buf, size_t len,
                          mg_slice_t *out, size_t maxout, size_t *nout, int *done);

#endif
