"""A stand-in for the ZenML Pro management API, for the zenmlfs tests.

No ZenML Pro server can run here.  This stand-in serves exactly the routes
and replies the ZenML Pro documentation describes for a personal access
token (PAT) or an organization service account's key (ZENPROKEY_...), and
nothing more; what zenmlfs does with them is verified against that
documented contract, not against the ZenML Pro service:

    POST /auth/login   form password=<PAT>
        200 {"access_token": "<JWT>", "token_type": "bearer",
             "expires_in": N, "device_id": null, "device_metadata": null}
        401 for a bad or revoked PAT
    GET /users/me      Authorization: Bearer <JWT>
        200 the user: {"id", "name", "email", ...}; 401 without a valid JWT

The JWTs are HS256, signed with a secret of the stand-in's own, with
"sub" (the user's id), "exp", "iat" and a random "jti" (so no two are the
same bytes).  Stdlib only.

    s = ProStandIn(keys=["pat-..."]).start()
    s.url                       "http://127.0.0.1:NNNN"
    s.revoke(key)               /auth/login answers 401 for key from now on
    s.expires_in = 60           lifetime of the tokens issued from now on
    s.fail = 503                answer every request with that status (0: off)
    s.count("/auth/login")      requests seen on a route
    s.wait_count(route, n, timeout)  until count(route) >= n; True if so
    s.logins                    the forms /auth/login got (dicts)
    s.tokens                    every access token issued, in order
    s.user                      the user /users/me returns
    s.stop()
"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import threading
import time
import urllib.parse
import uuid

USER_ID = "0c3d1c2e-8b7a-4e0f-9d55-2f6a1b7c9e10"


def _b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _unb64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class ProStandIn:
    def __init__(self, keys, expires_in=3600):
        self._lock = threading.Condition()
        self._secret = os.urandom(32)
        self._keys = set(keys)
        self._revoked = set()
        self._counts = {}
        self.expires_in = expires_in
        self.fail = 0
        self.logins = []
        self.tokens = []
        self.user = {"id": USER_ID, "name": "ada", "email": "ada@example.com",
                     "is_active": True, "avatar_url": None,
                     "company": None, "job_title": None}
        self._httpd = None
        self._thread = None

    # ---- controls ------------------------------------------------------

    def start(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                outer._serve(self, "GET")

            def do_POST(self):
                outer._serve(self, "POST")

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._httpd.server_address[1]

    def revoke(self, key):
        with self._lock:
            self._revoked.add(key)

    def count(self, route):
        with self._lock:
            return self._counts.get(route, 0)

    def wait_count(self, route, n, timeout):
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._counts.get(route, 0) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    # ---- the documented routes ------------------------------------------

    def _jwt(self, sub, lifetime):
        now = int(time.time())
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps({"sub": sub, "iat": now, "exp": now + lifetime,
                                "jti": uuid.uuid4().hex}).encode())
        sig = hmac.new(self._secret, (head + "." + body).encode(),
                       hashlib.sha256).digest()
        return head + "." + body + "." + _b64(sig)

    def _valid_jwt(self, tok):
        try:
            head, body, sig = tok.split(".")
            want = hmac.new(self._secret, (head + "." + body).encode(),
                            hashlib.sha256).digest()
            if not hmac.compare_digest(want, _unb64(sig)):
                return False
            return json.loads(_unb64(body))["exp"] > time.time()
        except (ValueError, KeyError, TypeError):
            return False

    def _serve(self, req, method):
        route = urllib.parse.urlsplit(req.path).path
        n = int(req.headers.get("Content-Length") or 0)
        data = req.rfile.read(n) if n else b""
        with self._lock:
            self._counts[route] = self._counts.get(route, 0) + 1
            self._lock.notify_all()
            fail = self.fail
        if fail:
            return self._reply(req, fail, {"detail": "Service Unavailable"})
        if method == "POST" and route == "/auth/login":
            return self._login(req, data)
        if method == "GET" and route == "/users/me":
            auth = req.headers.get("Authorization", "")
            if auth.startswith("Bearer ") and self._valid_jwt(auth[7:]):
                return self._reply(req, 200, self.user)
            return self._reply(req, 401, {"detail": "Not authenticated"})
        return self._reply(req, 404, {"detail": "Not Found"})

    def _login(self, req, data):
        form = dict(urllib.parse.parse_qsl(data.decode()))
        with self._lock:
            self.logins.append(form)
            key = form.get("password", "")
            ok = key in self._keys and key not in self._revoked
            lifetime = self.expires_in
        if not ok:
            return self._reply(req, 401, {"detail": "Invalid credentials"})
        tok = self._jwt(self.user["id"], lifetime)
        with self._lock:
            self.tokens.append(tok)
        return self._reply(req, 200, {"access_token": tok,
                                      "token_type": "bearer",
                                      "expires_in": lifetime,
                                      "device_id": None,
                                      "device_metadata": None})

    def _reply(self, req, status, obj):
        body = json.dumps(obj).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)
