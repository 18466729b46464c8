"""A small authoritative-style DNS server for the tests (UDP + TCP on one
127.0.0.1 port), answering from a mutable table.

    dns = FakeDNS()
    dns.set("api.test", A=["127.0.0.1", "127.0.0.2"], ttl=1)
    dns.set("_http._tcp.api.test", SRV=[(10, 1, 8080, "h1.test")], glue=True)
    dns.set("alias.test", CNAME="api.test")
    dns.set("gone.test", rcode=3)          # NXDOMAIN
    dns.set("broken.test", rcode=2)        # SERVFAIL
    dns.set("big.test", A=[...], truncate=True)  # TC over UDP, full answer over TCP
    dns.set("x.test", A=[...], spoof=True) # a wrong-ID copy first, then the answer
    dns.silent = True                      # drop every query
    dns.close()

Unknown names get NXDOMAIN; a known name without records of the asked
type gets NODATA (an SOA with the negative TTL in the authority section).
"""
import ipaddress
import socket
import struct
import threading


def _enc_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            b = label.encode()
            out += bytes([len(b)]) + b
    return out + b"\0"


def _read_name(msg, pos):
    labels = []
    jumped = False
    end = pos
    for _ in range(64):
        n = msg[pos]
        if n & 0xC0 == 0xC0:
            if not jumped:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | msg[pos + 1]
            jumped = True
            continue
        if n == 0:
            if not jumped:
                end = pos + 1
            return ".".join(labels), end
        labels.append(msg[pos + 1:pos + 1 + n].decode("latin-1"))
        pos += 1 + n
    raise ValueError("name loop")


T_A, T_CNAME, T_SOA, T_AAAA, T_SRV = 1, 5, 6, 28, 33
TYPES = {T_A: "A", T_AAAA: "AAAA", T_SRV: "SRV", T_CNAME: "CNAME"}


class FakeDNS:
    def __init__(self):
        self.lock = threading.Lock()
        self.table = {}
        self.silent = False
        self.queries = []  # (name, type name, "udp"/"tcp")
        for _ in range(50):  # a UDP port whose TCP twin is free too
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        else:
            raise OSError("no UDP+TCP port pair free")
        self.tcp.listen(16)
        self.addr = f"127.0.0.1:{self.port}"
        self.udp.settimeout(0.2)  # so the loops see `stopping`
        self.tcp.settimeout(0.2)
        self.stopping = False
        self.threads = [threading.Thread(target=self._udp_loop, daemon=True),
                        threading.Thread(target=self._tcp_loop, daemon=True)]
        for t in self.threads:
            t.start()

    # -- table -------------------------------------------------------------
    def set(self, name, A=None, AAAA=None, SRV=None, CNAME=None, ttl=30, rcode=0, glue=False,
            truncate=False, silent=False, spoof=False):
        with self.lock:
            self.table[name.lower().rstrip(".")] = dict(A=A or [], AAAA=AAAA or [], SRV=SRV or [],
                                                        CNAME=CNAME, ttl=ttl, rcode=rcode, glue=glue,
                                                        truncate=truncate, silent=silent, spoof=spoof)

    def remove(self, name):
        with self.lock:
            self.table.pop(name.lower().rstrip("."), None)

    def count(self, name, qtype=None):
        with self.lock:
            return sum(1 for n, t, _ in self.queries if n == name and (qtype is None or t == qtype))

    # -- answers -----------------------------------------------------------
    def _rr(self, name, rtype, ttl, rdata):
        return _enc_name(name) + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata

    def _records(self, name, qtype, ttl_out):
        """Answer records for (name, qtype), following CNAMEs like a recursive resolver."""
        out = []
        extra = []
        rcode = 0
        cur = name
        for _ in range(8):
            e = self.table.get(cur.lower())
            if e is None:
                return out, extra, (3 if not out else 0), None
            if e["rcode"]:
                return out, extra, e["rcode"], e
            if e["CNAME"] and qtype != T_CNAME:
                out.append(self._rr(cur, T_CNAME, e["ttl"], _enc_name(e["CNAME"])))
                cur = e["CNAME"]
                continue
            if qtype == T_A:
                for ip in e["A"]:
                    out.append(self._rr(cur, T_A, e["ttl"], ipaddress.IPv4Address(ip).packed))
            elif qtype == T_AAAA:
                for ip in e["AAAA"]:
                    out.append(self._rr(cur, T_AAAA, e["ttl"], ipaddress.IPv6Address(ip).packed))
            elif qtype == T_SRV:
                for prio, weight, port, target in e["SRV"]:
                    out.append(self._rr(cur, T_SRV, e["ttl"],
                                        struct.pack("!HHH", prio, weight, port) + _enc_name(target)))
                    t = self.table.get(target.lower().rstrip("."))
                    if e["glue"] and t:
                        for ip in t["A"]:
                            extra.append(self._rr(target, T_A, t["ttl"], ipaddress.IPv4Address(ip).packed))
                        for ip in t["AAAA"]:
                            extra.append(self._rr(target, T_AAAA, t["ttl"], ipaddress.IPv6Address(ip).packed))
            return out, extra, rcode, e
        return out, extra, 2, None

    def answer(self, msg, tcp=False):
        qid, flags, qd = struct.unpack("!HHH", msg[:6])
        name, pos = _read_name(msg, 12)
        qtype, qclass = struct.unpack("!HH", msg[pos:pos + 4])
        question = msg[12:pos + 4]
        with self.lock:
            self.queries.append((name.lower(), TYPES.get(qtype, str(qtype)), "tcp" if tcp else "udp"))
            if self.silent:
                return None
            e = self.table.get(name.lower())
            if e and e["silent"]:
                return None
            ans, extra, rcode, entry = self._records(name, qtype, None)
            truncate = bool(entry and entry["truncate"] and not tcp)
        auth = []
        if rcode in (0, 3) and not ans:
            # negative answer: an SOA for the negative TTL (RFC 2308)
            soa = _enc_name("ns.test") + _enc_name("admin.test") + struct.pack("!IIIII", 1, 60, 60, 60, 1)
            auth.append(self._rr("test", T_SOA, 1, soa))
        hflags = 0x8180 | (rcode & 0xF) | (0x0200 if truncate else 0) | (0x0400)
        if truncate:
            ans, auth, extra = [], [], []
        head = struct.pack("!HHHHHH", qid, hflags, 1, len(ans), len(auth), len(extra))
        return head + question + b"".join(ans) + b"".join(auth) + b"".join(extra)

    # -- servers -----------------------------------------------------------
    def _udp_loop(self):
        while not self.stopping:
            try:
                msg, peer = self.udp.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                out = self.answer(msg)
            except Exception:
                continue
            if out is not None:
                try:
                    with self.lock:
                        name = _read_name(msg, 12)[0].lower()
                        spoof = self.table.get(name, {}).get("spoof")
                    if spoof:  # same question, wrong ID: must be ignored
                        self.udp.sendto(struct.pack("!H", (struct.unpack("!H", out[:2])[0] ^ 0x5555)) + out[2:], peer)
                    self.udp.sendto(out, peer)
                except OSError:
                    pass

    def _tcp_loop(self):
        while not self.stopping:
            try:
                s, _ = self.tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(s,), daemon=True).start()

    def _tcp_conn(self, s):
        try:
            s.settimeout(5)
            buf = b""
            while len(buf) < 2:
                d = s.recv(4096)
                if not d:
                    return
                buf += d
            n = struct.unpack("!H", buf[:2])[0]
            while len(buf) < 2 + n:
                d = s.recv(4096)
                if not d:
                    return
                buf += d
            out = self.answer(buf[2:2 + n], tcp=True)
            if out is not None:
                s.sendall(struct.pack("!H", len(out)) + out)
        except (OSError, ValueError):
            pass
        finally:
            s.close()

    def close(self):
        self.stopping = True
        for t in self.threads:
            t.join(2)
        for sock in (self.udp, self.tcp):
            try:
                sock.close()
            except OSError:
                pass
