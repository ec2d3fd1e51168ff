"""A small fault-injecting HTTP reverse proxy for the zenmlfs tests.

Stdlib only.  Sits on 127.0.0.1:<random port> between zenmlfs and the real
ZenML server and forwards every request, unless told otherwise:

    p = FaultProxy("127.0.0.1", server_port); p.start()
    p.url                      -> "http://127.0.0.1:NNNN" (give to zenmlfs)
    p.set_mode("pass")         forward (default)
    p.set_mode("refuse")       stop listening: connects are refused, and
                               requests on kept-alive connections are dropped
    p.set_mode("hang")         accept, never answer (until hang_limit s or
                               until the mode changes; then drop)
    p.set_mode("status", status=503, body=b'...')  answer every request so
    p.set_mode("garbage")      200 application/json with a non-JSON body
    p.add_fault("/api/v1/api_token", "status", status=500, count=3)
                               same modes for one path prefix (count=None:
                               until clear_faults()); first match wins
    p.add_fault(prefix, "hold")  hold each such request until released:
                               p.release(prefix=None, forward=True) lets
                               every request held now (under prefix, or
                               all) go on to the server (forward=False:
                               drop its connection).  The fault stays, so
                               later requests are held too: remove it with
                               p.remove_fault(prefix) or clear_faults().
                               A held request whose client hangs up, or
                               one held for hang_limit s, is dropped.
    p.held(prefix="")          requests held right now under prefix
    p.first_since(prefix, t)   when (time.monotonic()) the first request
                               under prefix came in at or after t; None
    p.wait_held(n, prefix="", timeout=30)  until at least n are held;
                               True, or False at the timeout
    p.add_fault(prefix, "delay", delay=3.0)  wait delay s, then forward
    p.add_fault(prefix, "status", status=429, headers={"Retry-After": "3"})
                               a status fault's reply carries these headers
    p.remove_fault(prefix)     drop the faults added for exactly prefix
    p.count("/api/v1/api_token")  requests seen whose path starts with it
    p.count(prefix, method="PUT")  ... of that method only
    p.counts                   {path: n} (the query left out)
    p.method_counts            {(method, path): n}
    p.reset_counts()
    p.auth_override[("PUT", prefix)] = token
                               requests under prefix use that bearer token
    p.rewrite_token = fn       fn(str) -> str replaces the JWT in 200
                               replies to GET /api/v1/api_token
    p.tokens_out               every api_token string handed to a client
    p.stop()                   also drops every held or delayed request:
                               their handler threads end (joined, 5 s)

All controls are thread-safe.

The proxy adds well under a millisecond to a request: each reply goes out
in one write on a TCP_NODELAY socket (a reply sent as headers, then body,
waits for the client's delayed ACK: ~40 ms on Linux), and each client
connection keeps one kept-alive connection to the server.
"""

import collections
import http.client
import http.server
import json
import select
import socket
import threading
import time

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate",
              "proxy-authorization", "te", "trailers", "transfer-encoding",
              "upgrade", "content-length", "host"}

MODES = ("pass", "refuse", "hang", "status", "garbage", "hold", "delay")


class _Fault:
    def __init__(self, mode, status=503, body=None, count=None, delay=0.0,
                 headers=None):
        if mode not in MODES:
            raise ValueError("unknown mode %r" % mode)
        self.mode = mode
        if isinstance(headers, dict):
            headers = headers.items()
        self.headers = list(headers or ())
        self.status = status
        self.body = body
        self.count = count
        self.delay = delay


class _Held:
    """One request waiting in "hold" (or "delay"): its path, and what the
    test decided (None: still waiting; "forward" or "drop")."""

    def __init__(self, kind, method, path):
        self.kind = kind
        self.method = method
        self.path = path
        self.action = None
        self.thread = threading.current_thread()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as libcurl expects

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._up = None     # kept-alive connection to the server

    def finish(self):
        self._up_close()
        super().finish()

    def log_message(self, fmt, *args):
        pass

    def _drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, status, headers, body):
        """Status line, headers and body in one write: a reply in two
        pieces waits for the client's delayed ACK (Nagle)."""
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        head = ["HTTP/1.1 %d %s" % (status, reason)]
        head += ["%s: %s" % (k, v) for k, v in headers]
        head.append("Content-Length: %d" % len(body))
        if self.close_connection:
            head.append("Connection: close")
        out = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if self.command != "HEAD":
            out += body
        self.wfile.write(out)

    def _reply(self, status, body, ctype="application/json"):
        self._send(status, [("Content-Type", ctype)], body)

    def _up_close(self):
        if self._up is not None:
            self._up.close()
            self._up = None

    def _upstream(self, method, url, body, headers):
        """One request to the server on the kept-alive connection; a
        connection the server closed while idle is replaced (once).
        Returns (status, [(header, value)], body); raises OSError when the
        server cannot be reached."""
        proxy = self.server.proxy
        for attempt in (0, 1):
            reused = self._up is not None
            if reused and select.select([self._up.sock], [], [], 0)[0]:
                # Readable while idle: the server closed it (EOF).
                self._up_close()
                reused = False
            if self._up is None:
                self._up = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60)
            try:
                self._up.request(method, url, body=body, headers=headers)
                resp = self._up.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError) as e:
                self._up_close()
                if reused and attempt == 0:
                    continue    # closed under us while idle: a new one
                raise ConnectionError(str(e)) from e
            except (OSError, http.client.HTTPException) as e:
                self._up_close()
                raise ConnectionError(str(e)) from e
            if resp.will_close:
                self._up_close()
            rheaders = [(k, v) for k, v in resp.getheaders()
                        if k.lower() not in HOP_BY_HOP]
            return resp.status, rheaders, data

    def _handle(self):
        proxy = self.server.proxy
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        fault = proxy._begin(self.command, path)

        if fault.mode == "refuse":
            self._drop()
            return
        if fault.mode == "hang":
            proxy._hang_wait()
            self._drop()
            return
        if fault.mode == "status":
            b = fault.body
            if b is None:
                b = json.dumps({"detail": ["ServerError",
                                           "injected by test proxy"]})
            if isinstance(b, str):
                b = b.encode()
            self._send(fault.status,
                       [("Content-Type", "application/json")] + fault.headers,
                       b)
            return
        if fault.mode == "garbage":
            self._reply(200, b"<html>this is not json")
            return
        if fault.mode in ("hold", "delay"):
            if proxy._hold(self, path, fault) != "forward":
                self._drop()
                return

        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in HOP_BY_HOP}
        headers["Host"] = "%s:%d" % (proxy.upstream_host, proxy.upstream_port)
        # Stand in for a server whose RBAC grants more than OSS does: a
        # request under a prefix goes on with another bearer token.
        for (method, prefix), token in list(proxy.auth_override.items()):
            if self.command == method and path.startswith(prefix):
                headers = {k: v for k, v in headers.items()
                           if k.lower() != "authorization"}
                headers["Authorization"] = "Bearer " + token
        try:
            status, rheaders, data = self._upstream(self.command, self.path,
                                                    body, headers)
        except OSError:
            # Upstream down: look like it to the client.
            self._drop()
            return

        if (self.command == "GET" and path == "/api/v1/api_token"
                and status == 200):
            try:
                tok = json.loads(data)
            except ValueError:
                tok = None
            if isinstance(tok, str):
                hook = proxy.rewrite_token
                if hook is not None:
                    tok = hook(tok)
                    data = json.dumps(tok).encode()
                proxy._record_token(tok)

        try:
            self._send(status, rheaders, data)
        except OSError:
            # The client gave up meanwhile (a held or delayed request).
            self._drop()

    def _client_gone(self):
        """The client closed its connection (or sent more than we read:
        never while it waits for this reply)."""
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if not r:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


class FaultProxy:
    def __init__(self, upstream_host, upstream_port, hang_limit=300.0):
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.hang_limit = hang_limit
        self.rewrite_token = None
        # {(METHOD, path prefix): bearer token} used instead of the
        # client's own (see _handle)
        self.auth_override = {}
        self._lock = threading.Lock()
        self._mode_changed = threading.Condition(self._lock)
        self._fault = _Fault("pass")
        self._faults = []          # [(prefix, _Fault)]
        self._held = []            # [_Held] waiting now (hold, delay)
        self._stopped = False
        self._counts = {}          # (method, path) -> n
        # (time.monotonic() it came in, path) of the latest requests
        self._starts = collections.deque(maxlen=100000)
        self._tokens = []
        self._srv = None
        self._thread = None
        self.port = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        self._listen()
        return self

    def _listen(self):
        srv = _Server(("127.0.0.1", self.port or 0), _Handler)
        srv.proxy = self
        self.port = srv.server_address[1]
        t = threading.Thread(target=srv.serve_forever,
                             kwargs={"poll_interval": 0.1},
                             name="fault-proxy", daemon=True)
        t.start()
        self._srv, self._thread = srv, t

    def _unlisten(self):
        srv, self._srv = self._srv, None
        if srv is not None:
            srv.shutdown()
            srv.server_close()
            self._thread.join(5)

    def stop(self):
        with self._lock:
            self._fault = _Fault("pass")
            self._stopped = True
            waiting = list(self._held)
            for h in waiting:
                h.action = "drop"
            self._mode_changed.notify_all()
        for h in waiting:
            h.thread.join(5)
        self._unlisten()

    # -- controls ----------------------------------------------------------

    def set_mode(self, mode, status=503, body=None):
        """Global fault for every request (see module doc)."""
        f = _Fault(mode, status, body)
        with self._lock:
            old = self._fault.mode
            self._fault = f
            self._mode_changed.notify_all()
        if mode == "refuse" and old != "refuse":
            self._unlisten()
        elif mode != "refuse" and old == "refuse":
            # Same port again; retry while the old socket lingers.
            for _ in range(50):
                try:
                    self._listen()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                raise RuntimeError("proxy cannot listen again on %d"
                                   % self.port)

    @property
    def mode(self):
        with self._lock:
            return self._fault.mode

    def add_fault(self, prefix, mode, status=503, body=None, count=None,
                  delay=0.0, headers=None):
        """Fault for requests whose path starts with prefix; count=N: only
        the next N such requests.  "refuse" here drops the connection;
        "hold" waits for release(); "delay" waits delay s, then forwards."""
        with self._lock:
            self._faults.append((prefix, _Fault(mode, status, body, count,
                                                delay, headers)))
            self._mode_changed.notify_all()

    def remove_fault(self, prefix):
        """Remove the faults added for exactly this prefix (requests held
        already stay held until release())."""
        with self._lock:
            self._faults = [(p, f) for p, f in self._faults if p != prefix]
            self._mode_changed.notify_all()

    def release(self, prefix=None, forward=True):
        """Let go of the requests held now (those whose path starts with
        prefix; None: all): forwarded to the server, or (forward=False)
        their connection dropped.  Returns how many."""
        n = 0
        with self._lock:
            for h in self._held:
                if h.action is None and h.path.startswith(prefix or ""):
                    h.action = "forward" if forward else "drop"
                    n += 1
            self._mode_changed.notify_all()
        return n

    def held(self, prefix=""):
        """Requests under prefix held ("hold") right now."""
        with self._lock:
            return sum(1 for h in self._held
                       if h.action is None and h.kind == "hold"
                       and h.path.startswith(prefix))

    def wait_held(self, n, prefix="", timeout=30.0):
        """Until at least n requests under prefix are held; False if not
        within timeout s."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = sum(1 for h in self._held
                          if h.action is None and h.kind == "hold"
                          and h.path.startswith(prefix))
                left = deadline - time.monotonic()
                if got >= n:
                    return True
                if left <= 0:
                    return False
                self._mode_changed.wait(min(left, 0.5))

    def clear_faults(self):
        with self._lock:
            self._faults = []
            self._mode_changed.notify_all()

    def count(self, prefix="", method=None):
        with self._lock:
            return sum(n for (m, p), n in self._counts.items()
                       if p.startswith(prefix) and method in (None, m))

    @property
    def counts(self):
        """{path: requests}, whatever their method."""
        out = {}
        with self._lock:
            for (_, p), n in self._counts.items():
                out[p] = out.get(p, 0) + n
        return out

    @property
    def method_counts(self):
        """{(method, path): requests}."""
        with self._lock:
            return dict(self._counts)

    def first_since(self, prefix, since):
        """When (time.monotonic()) the first request to a path starting
        with prefix came in at or after since; None if none has."""
        with self._lock:
            for t, path in self._starts:
                if t >= since and path.startswith(prefix):
                    return t
        return None

    def reset_counts(self):
        with self._lock:
            self._counts = {}

    @property
    def tokens_out(self):
        with self._lock:
            return list(self._tokens)

    # -- used by the handler ----------------------------------------------

    def _begin(self, method, path):
        with self._lock:
            key = (method, path)
            self._counts[key] = self._counts.get(key, 0) + 1
            self._starts.append((time.monotonic(), path))
            for i, (prefix, f) in enumerate(self._faults):
                if path.startswith(prefix):
                    if f.count is not None:
                        f.count -= 1
                        if f.count <= 0:
                            del self._faults[i]
                    return f
            return self._fault

    def _hang_wait(self):
        deadline = time.monotonic() + self.hang_limit
        with self._lock:
            start_fault = self._fault
            start_faults = list(self._faults)
            while time.monotonic() < deadline:
                if self._fault is not start_fault or \
                        self._faults != start_faults:
                    return
                self._mode_changed.wait(min(1.0, deadline - time.monotonic()))

    def _hold(self, handler, path, fault):
        """Wait as fault says ("hold": until release(); "delay": fault.delay
        s); "forward" or "drop".  Ends early ("drop") when the proxy stops,
        the client hangs up, or after hang_limit s."""
        is_delay = fault.mode == "delay"
        h = _Held(fault.mode, handler.command, path)
        now = time.monotonic()
        deadline = now + (fault.delay if is_delay else self.hang_limit)
        with self._lock:
            if self._stopped:
                return "drop"
            self._held.append(h)
            self._mode_changed.notify_all()
            try:
                while h.action is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        h.action = "forward" if is_delay else "drop"
                        break
                    self._mode_changed.wait(min(left, 0.25))
                    if h.action is None and handler._client_gone():
                        h.action = "drop"
                return h.action
            finally:
                self._held.remove(h)
                self._mode_changed.notify_all()

    def _record_token(self, tok):
        with self._lock:
            self._tokens.append(tok)
