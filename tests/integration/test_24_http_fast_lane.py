"""The HTTP fast lane (src/ingest/http_fast.c): plain ingest POSTs are served without
libmicrohttpd, everything else is handed to it on the same connection. Raw sockets, so that
pipelining, split packets, Connection: close and idle timeouts are under the test's control;
every outcome is checked against what the store holds."""
import json
import select
import signal
import socket
import threading
import time

import pytest

from conftest import embedded_only, reading, uid

PATH = "/api/v1/readings"
TS = 1767225600000  # 2026-01-01T00:00:00Z


def post_bytes(body, path=PATH, headers=None, version="HTTP/1.1"):
    h = {"Host": "127.0.0.1", "Content-Type": "application/json",
         "Content-Length": str(len(body))}
    h.update(headers or {})
    head = "POST %s %s\r\n" % (path, version)
    head += "".join("%s: %s\r\n" % (k, v) for k, v in h.items() if v is not None)
    return head.encode() + b"\r\n" + body


def one(device, ts=TS, value=1.5):
    return json.dumps({"readings": [reading(device, ts, value)]}).encode()


class Conn:
    """A keep-alive client connection that reads back Content-Length framed responses."""

    def __init__(self, srv, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def response(self):
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            assert chunk, "connection closed before a response; got %r" % self.buf
            self.buf += chunk
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(rest) < n:
            chunk = self.s.recv(65536)
            assert chunk, "connection closed inside a body"
            rest += chunk
        self.buf = rest[n:]
        return status, headers, rest[:n]

    def closed_by_server(self, timeout=5.0):
        """True when the server closes the connection (EOF or reset) within timeout."""
        self.s.settimeout(timeout)
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


def stored_values(srv, device):
    srv.drained()
    return [r["value"] for r in srv.readings(device)]


@pytest.mark.parametrize("lane", ["1", "0"])
def test_pipelined_posts_are_answered_in_order_and_only_the_good_ones_stored(
        meterd_factory, lane):
    srv = meterd_factory(extra_args=["--http-fast-lane", lane])
    dev = uid("pipe")
    c = Conn(srv)
    # three requests in one write: good, malformed JSON, good
    c.send(post_bytes(one(dev, TS, 1.0)) + post_bytes(b'{"readings": [') +
           post_bytes(one(dev, TS + 1000, 2.0)))
    answers = [c.response() for _ in range(3)]
    assert [a[0] for a in answers] == [202, 400, 202], answers
    assert json.loads(answers[0][2])["accepted"] == 1
    err = json.loads(answers[1][2])
    assert err["statusCode"] == 400 and "malformed JSON" in err["message"]
    assert err["request_id"] == answers[1][1]["x-request-id"]
    assert len({a[1]["x-request-id"] for a in answers}) == 3
    c.close()
    assert stored_values(srv, dev) == [1.0, 2.0]


def test_a_long_pipelined_burst_read_back_concurrently_is_answered_in_full(meterd):
    """3,000 requests in one write, answers read as they come. The lane leaves a request that
    has not fully arrived in the socket; on loopback the socket's memory then stays charged
    for the large packets around it, its window closed, and the rest never came (it stalled
    after ~1,000 answers until the idle timeout). Such a client is handed to libmicrohttpd,
    which reads into its own buffer."""
    dev = uid("burst")
    n = 3000
    reqs = b"".join(post_bytes(one(dev, TS + i * 1000, float(i))) for i in range(n))
    c = Conn(meterd, timeout=30)
    sender = threading.Thread(target=c.send, args=(reqs,))
    sender.start()
    answers = [c.response() for _ in range(n)]
    sender.join()
    c.close()
    assert [a[0] for a in answers] == [202] * n
    assert [json.loads(a[2])["accepted"] for a in answers] == [1] * n
    assert stored_values(meterd, dev)[:3] == [0.0, 1.0, 2.0]
    meterd.drained()
    assert len(meterd.readings(dev, limit=5000)) == n


def test_fast_answers_carry_the_headers_of_libmicrohttpd_ones(meterd):
    dev = uid("hdr")
    c = Conn(meterd)
    c.send(post_bytes(one(dev), headers={"X-Request-Id": "client-id-42"}))
    status, h, body = c.response()
    assert status == 202
    assert h["content-type"] == "application/json"
    assert h["x-request-id"] == "client-id-42"
    assert h["content-length"] == str(len(body))
    assert h["date"].endswith(" GMT")
    doc = json.loads(body)
    assert doc["accepted"] == 1 and doc["batch_id"] and doc["position"]
    # a wrong content type is refused by the lane with the usual JSON error
    c.send(post_bytes(b"x", headers={"Content-Type": "text/plain"}))
    status, h, body = c.response()
    assert status == 415, body
    assert json.loads(body)["path"] == PATH
    c.close()


def test_a_request_split_over_packets_is_waited_for_and_served(meterd):
    dev = uid("split")
    c = Conn(meterd)
    req = post_bytes(one(dev, TS, 3.0))
    head_len = req.index(b"\r\n\r\n") + 4
    c.send(req[:head_len])
    time.sleep(0.3)
    c.send(req[head_len:])
    assert c.response()[0] == 202
    # split inside the headers too, then a plain one on the same keep-alive connection
    req = post_bytes(one(dev, TS + 1000, 4.0))
    c.send(req[:20])
    time.sleep(0.3)
    c.send(req[20:])
    assert c.response()[0] == 202
    c.send(post_bytes(one(dev, TS + 2000, 5.0)))
    assert c.response()[0] == 202
    c.close()
    assert stored_values(meterd, dev) == [3.0, 4.0, 5.0]


def test_a_get_after_fast_posts_on_one_connection_is_handed_over(meterd):
    dev = uid("mixed")
    c = Conn(meterd)
    c.send(post_bytes(one(dev, TS, 5.0)))
    assert c.response()[0] == 202
    meterd.drained()
    c.send(("GET /api/v1/devices/%s/readings HTTP/1.1\r\nHost: x\r\n\r\n" % dev).encode())
    status, _, body = c.response()
    assert status == 200, body
    assert [r["value"] for r in json.loads(body)["readings"]] == [5.0]
    c.close()


def test_connection_close_is_honoured(meterd):
    dev = uid("close")
    c = Conn(meterd)
    c.send(post_bytes(one(dev), headers={"Connection": "close"}))
    status, h, _ = c.response()
    assert status == 202
    assert h.get("connection", "").lower() == "close"
    assert c.closed_by_server()
    c.close()
    assert stored_values(meterd, dev) == [1.5]


def test_http10_chunked_and_expect_requests_still_work(meterd):
    dev = uid("other")
    c = Conn(meterd)
    c.send(post_bytes(one(dev, TS, 1.0), version="HTTP/1.0"))
    assert c.response()[0] == 202
    c.close()
    c = Conn(meterd)
    body = one(dev, TS + 1000, 2.0)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    c.send(post_bytes(chunked, headers={"Content-Length": None, "Transfer-Encoding": "chunked"}))
    assert c.response()[0] == 202
    c.close()
    c = Conn(meterd)
    body = one(dev, TS + 2000, 3.0)
    c.send(post_bytes(body, headers={"Expect": "100-continue"})[:-len(body)])
    assert c.response()[0] == 100
    c.send(body)
    assert c.response()[0] == 202
    c.close()
    assert stored_values(meterd, dev) == [1.0, 2.0, 3.0]


def test_idle_connections_are_closed_after_the_idle_timeout(meterd_factory):
    srv = meterd_factory(extra_args=["--idle-timeout", "1"])
    silent, used, half = Conn(srv), Conn(srv), Conn(srv)
    used.send(post_bytes(one(uid("idle"))))
    assert used.response()[0] == 202
    dev = uid("half")
    half.send(post_bytes(one(dev))[:-10])  # a request that never completes
    assert silent.closed_by_server(timeout=4.0)
    assert used.closed_by_server(timeout=4.0)
    assert half.closed_by_server(timeout=4.0)
    for c in (silent, used, half):
        c.close()
    srv.drained()
    assert srv.get("/api/v1/devices/%s/readings" % dev).status_code == 404  # nothing stored
    # a busy connection is not idle: requests every 0.5 s keep it open past the timeout
    busy = Conn(srv)
    for i in range(5):
        busy.send(post_bytes(one(uid("busy"))))
        assert busy.response()[0] == 202
        time.sleep(0.5)
    busy.close()


@embedded_only("counts the connections of one meterd serve process")
def test_max_connections_counts_both_lanes_and_frees_slots_on_close(meterd_factory):
    srv = meterd_factory(extra_args=["--max-connections", "3"])
    # /ready polling by the harness has closed its connections; give the server a moment
    time.sleep(0.2)
    fast, handed = Conn(srv), Conn(srv)
    fast.send(post_bytes(one(uid("mc"))))
    assert fast.response()[0] == 202
    handed.send(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")  # now libmicrohttpd's
    assert handed.response()[0] == 200
    third = Conn(srv)
    third.send(post_bytes(one(uid("mc"))))
    assert third.response()[0] == 202
    refused = Conn(srv)
    refused.send(post_bytes(one(uid("mc"))))
    assert refused.closed_by_server(), "a connection over the limit was served"
    refused.close()
    kept = []
    for c in (fast, handed):  # one slot back from each lane
        c.close()
        deadline = time.monotonic() + 5
        while True:
            again = Conn(srv)
            again.send(post_bytes(one(uid("mc"))))
            try:
                ok = again.response()[0] == 202
            except (AssertionError, ConnectionResetError):
                ok = False
            if ok:
                kept.append(again)  # holds the slot: the next round needs the other one
                break
            again.close()
            assert time.monotonic() < deadline, "the slot of a closed connection never came back"
            time.sleep(0.1)
    for c in kept + [third]:
        c.close()


def test_a_pipelining_client_that_stops_reading_is_cut_off_after_the_idle_timeout(
        meterd_factory):
    """Megabytes of pipelined requests whose answers are never read: one request is taken at a
    time and the answers are not buffered beyond the socket, so the flow stops (at the first
    partial request libmicrohttpd takes over, which reads no further while its answer cannot
    be sent) and the idle timeout closes the connection instead of letting it hold its slot
    and memory."""
    srv = meterd_factory(extra_args=["--idle-timeout", "1"])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", srv.port))
    dev = uid("stall")
    one_req = post_bytes(one(dev, TS, 1.0))
    total = 40000 * len(one_req)  # ~11 MB: more than any socket buffers hold
    sent, cut = 0, False
    s.setblocking(False)
    last_progress = time.monotonic()
    chunk = one_req * 200
    while sent < total and time.monotonic() - last_progress < 8:
        try:
            off = sent % len(chunk)  # whole requests only: a partial send continues them
            sent += s.send(chunk[off:])
            last_progress = time.monotonic()
        except BlockingIOError:
            time.sleep(0.05)  # the server stopped reading
        except (ConnectionResetError, BrokenPipeError):
            cut = True
            break
    assert sent < total, "the server kept reading requests it could not answer"
    if not cut:  # the reset may come after our last send: look for it without reading, since
        # reading the answers would let the server go on
        p = select.poll()
        p.register(s, select.POLLERR | select.POLLHUP)
        cut = bool(p.poll(5000))
    s.close()
    assert cut, "the stalled connection was never closed by the server"
    assert srv.post_readings([reading(uid("after"), TS, 1.0)]).status_code == 202


@embedded_only("times the shutdown of one meterd serve process")
def test_an_upload_begun_before_sigterm_is_waited_for_and_answered(meterd):
    """A request whose headers are in counts as in flight, as in libmicrohttpd: the graceful
    stop waits for the rest of its body (up to 5 s) and answers it 503 instead of resetting."""
    c = Conn(meterd)
    req = post_bytes(one(uid("slow")))
    c.send(req[:-10])
    time.sleep(0.2)
    meterd.proc.send_signal(signal.SIGTERM)
    time.sleep(1.5)
    assert meterd.running(), "meterd stopped with an upload in flight"
    c.send(req[-10:])
    status, h, body = c.response()
    assert status == 503 and "shutting down" in json.loads(body)["message"], body
    assert h.get("connection", "").lower() == "close"
    c.close()
    assert meterd.stop() == 0
