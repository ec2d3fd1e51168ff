"""A real ZenML server for tests, benchmarks and scripts/up.

Starts ``zenml.zen_server.zen_server_api:app`` under uvicorn: 127.0.0.1,
SQLite in a directory of its own, OAUTH2_PASSWORD_BEARER, a fixed JWT
secret (so tokens survive a restart) and auto-activation (user "default",
password "").

Plain ``requests`` calls only: no Session, hence no cookie jar (a password
login sets a cookie and the server prefers a cookie over the Authorization
header), and no Origin header (which would require a CSRF token).

Usable on its own (scripts/up does):
    python3 tests/zenserver.py start DIR [PORT]   detached; prints the URL
    python3 tests/zenserver.py stop DIR
    python3 tests/zenserver.py ensure-key DIR SA_NAME KEY_FILE
    python3 tests/zenserver.py run DIR [PORT]     foreground
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid

import requests

HEALTH_TIMEOUT = 90.0  # the first start runs the DB migrations
SAS = "/api/v1/service_accounts"
# A client (zenmlfs with no key, say) logs in with these as the server's
# auto-activated admin.
ADMIN_ENV = {"ZENML_STORE_USERNAME": "default", "ZENML_STORE_PASSWORD": ""}


def free_port():
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra=None):
    """os.environ without any ZENML_* variable (a developer's own
    ZENML_STORE_API_KEY must never leak into a test), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZENML_")}
    if extra:
        env.update(extra)
    return env


def jwt_claims(token):
    """Decode the payload of a JWT (base64url JSON) without verifying it."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT: %d parts" % len(parts))
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


def jwt_header(token):
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt_sign(claims, secret):
    """An HS256 JWT of ``claims`` signed with ``secret`` (the server's
    ZENML_SERVER_JWT_SECRET_KEY), byte-for-byte what PyJWT would accept."""
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"},
                              separators=(",", ":")).encode())
    body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    msg = (head + "." + body).encode()
    sig = hmac.new(secret.encode(), msg, hashlib.sha256).digest()
    return head + "." + body + "." + _b64url(sig)


def fake_api_key():
    """A well-formed ZENKEY_ value that no server knows."""
    blob = json.dumps({"id": str(uuid.uuid4()), "key": secrets.token_hex(32)},
                      separators=(",", ":"))
    return "ZENKEY_" + base64.b64encode(blob.encode()).decode()


class ZenServer:
    """One ZenML server process.  ``workdir`` holds its database, config,
    JWT secret and log (``server.log``); a restart reuses all of them."""

    def __init__(self, workdir, port=None, python=None, jwt_secret=None):
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.port = port or free_port()
        self.python = python or sys.executable
        self.url = "http://127.0.0.1:%d" % self.port
        self.log_path = os.path.join(self.workdir, "server.log")
        self.proc = None
        self._admin_token = None
        secret_path = os.path.join(self.workdir, "jwt_secret")
        if jwt_secret is None:
            if os.path.exists(secret_path):
                with open(secret_path) as f:
                    jwt_secret = f.read().strip()
            else:
                jwt_secret = secrets.token_hex(32)
                fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                             0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(jwt_secret + "\n")
        self.jwt_secret = jwt_secret

    # -- process ---------------------------------------------------------

    def env(self):
        return clean_env({
            "ZENML_CONFIG_PATH": os.path.join(self.workdir, "cfg"),
            "ZENML_STORE_URL": "sqlite:///" + os.path.join(self.workdir,
                                                          "zenml.db"),
            "ZENML_SERVER_AUTH_SCHEME": "OAUTH2_PASSWORD_BEARER",
            "ZENML_SERVER_JWT_SECRET_KEY": self.jwt_secret,
            "ZENML_SERVER_AUTO_ACTIVATE": "true",
            "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_ENABLE_REPO_INIT_WARNINGS": "false",
        })

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=HEALTH_TIMEOUT):
        """Start (or restart) on the same port, DB and JWT secret; return
        once GET /health answers."""
        if self.running():
            return
        log = open(self.log_path, "ab")
        log.write(b"\n==== zenserver start %s ====\n" % time.ctime().encode())
        log.flush()
        # Own session: a Ctrl-C in the terminal must not kill the server
        # before the tests' teardown has unmounted everything.
        self.proc = subprocess.Popen(
            [self.python, "-m", "uvicorn",
             "zenml.zen_server.zen_server_api:app",
             "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=self.env(), cwd=self.workdir, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("zenml server exited with %s; log:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            try:
                r = requests.get(self.url + "/health", timeout=2)
                # 0.98.0 answers text/plain "ok"; older ones JSON "OK".
                if r.status_code == 200 and \
                        r.text.strip().strip('"').lower() == "ok":
                    return
            except requests.RequestException:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError("zenml server not healthy after %.0f s; log:\n%s"
                           % (timeout, self.log_tail()))

    def stop(self, timeout=20):
        """Stop the server; the port then refuses connections."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        self.proc = None

    def log_tail(self, n=60):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    # -- REST --------------------------------------------------------------

    def api(self, method, path, json=None, token=None, data=None,
            params=None, timeout=30):
        """One request to the server; returns the requests.Response.
        ``token`` defaults to the admin's; pass token="" for none."""
        if token is None:
            token = self.admin_token()
        headers = {}
        if token:
            headers["Authorization"] = "Bearer " + token
        if not path.startswith("/"):
            path = "/" + path
        return requests.request(method, self.url + path, json=json,
                                data=data, params=params, headers=headers,
                                timeout=timeout, allow_redirects=False)

    def login(self, grant_type, password, username=None):
        data = {"grant_type": grant_type, "password": password}
        if username is not None:
            data["username"] = username
        return self.api("POST", "/api/v1/login", data=data, token="")

    def admin_token(self):
        """Access token of the auto-activated admin (no expiry in OSS)."""
        if self._admin_token is None:
            r = self.login("password", "", username="default")
            r.raise_for_status()
            self._admin_token = r.json()["access_token"]
        return self._admin_token

    def api_key_session(self, key):
        """Log in with an API key; returns the session token."""
        r = self.login("zenml-api-key", key)
        r.raise_for_status()
        return r.json()["access_token"]

    def current_user(self, token):
        """GET /api/v1/current-user with ``token``; the Response."""
        return self.api("GET", "/api/v1/current-user", token=token)

    def mint_token(self, session_token, expires_in=3600):
        r = self.api("GET", "/api/v1/api_token", token=session_token,
                     params={"token_type": "generic",
                             "expires_in": expires_in})
        r.raise_for_status()
        return r.json()

    def create_service_account(self, name, description=None):
        body = {"name": name, "active": True}
        if description is not None:
            body["description"] = description
        r = self.api("POST", "/api/v1/service_accounts", json=body)
        if r.status_code != 200:
            raise RuntimeError("create service account %r: %s %s"
                               % (name, r.status_code, r.text))
        return r.json()

    def create_api_key(self, sa_id, name, description=None):
        """The reply's body.key is the ZENKEY_ secret (only time shown)."""
        body = {"name": name}
        if description is not None:
            body["description"] = description
        r = self.api("POST", "/api/v1/service_accounts/%s/api_keys" % sa_id,
                     json=body)
        if r.status_code != 200:
            raise RuntimeError("create api key %r: %s %s"
                               % (name, r.status_code, r.text))
        return r.json()

    def set_api_key_active(self, sa_id, key_name_or_id, active):
        r = self.api("PUT", "/api/v1/service_accounts/%s/api_keys/%s"
                     % (sa_id, key_name_or_id), json={"active": bool(active)})
        r.raise_for_status()
        return r.json()

    def rotate_api_key(self, sa_id, key_name_or_id, retain_minutes=0):
        r = self.api("PUT", "/api/v1/service_accounts/%s/api_keys/%s/rotate"
                     % (sa_id, key_name_or_id),
                     json={"retain_period_minutes": retain_minutes})
        r.raise_for_status()
        return r.json()


class ServiceAccount:
    """A service account with one API key, made over REST."""

    def __init__(self, server, name=None, key_name="default"):
        self.server = server
        self.name = name or "zenmlfs-test-" + secrets.token_hex(4)
        sa = server.create_service_account(self.name)
        self.id = sa["id"]
        self.key_name = key_name
        k = server.create_api_key(self.id, key_name)
        self.key_id = k["id"]
        self.key = k["body"]["key"]

    def session_token(self):
        return self.server.api_key_session(self.key)

    def delete(self):
        """Best effort: the key, then the account."""
        for path in ("/api/v1/service_accounts/%s/api_keys/%s"
                     % (self.id, self.key_id),
                     "/api/v1/service_accounts/%s" % self.id):
            try:
                self.server.api("DELETE", path, timeout=10)
            except requests.RequestException:
                pass

    def __repr__(self):
        return "<ServiceAccount %s id=%s key=%s>" % (self.name, self.id,
                                                     self.key_name)


# -- command line (used by scripts/up and scripts/down) ----------------------


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _read_state(d):
    try:
        with open(os.path.join(d, "server.pid")) as f:
            pid = int(f.read().strip())
        with open(os.path.join(d, "url")) as f:
            url = f.read().strip()
        return pid, url
    except (OSError, ValueError):
        return None, None


def _healthy(url):
    try:
        r = requests.get(url + "/health", timeout=3)
        return r.status_code == 200
    except requests.RequestException:
        return False


def cli_start(d, port=8237):
    """Start a detached server in d (reused if already up); print its URL.
    Port `port` if free, else a random free one."""
    pid, url = _read_state(d)
    if pid and _pid_alive(pid) and _healthy(url):
        print(url)
        return
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    except OSError:
        port = free_port()
    srv = ZenServer(d, port=port)
    srv.start()
    with open(os.path.join(d, "server.pid"), "w") as f:
        f.write("%d\n" % srv.proc.pid)
    with open(os.path.join(d, "url"), "w") as f:
        f.write(srv.url + "\n")
    srv.proc = None     # detached: outlives this process
    print(srv.url)


def cli_stop(d):
    pid, _ = _read_state(d)
    if not pid or not _pid_alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        if not _pid_alive(pid):
            break
        time.sleep(0.1)
    else:
        os.killpg(pid, signal.SIGKILL)
    try:
        os.unlink(os.path.join(d, "server.pid"))
    except OSError:
        pass


def cli_ensure_key(d, sa_name, key_file, key_name="default"):
    """Make service account sa_name and an API key key_name exist on the
    server in d (idempotent) and leave the key in key_file (0600).  A key
    whose value we no longer have is rotated."""
    _, url = _read_state(d)
    srv = ZenServer(d, port=int(url.rsplit(":", 1)[1]))
    if os.path.exists(key_file):
        with open(key_file) as f:
            key = f.read().strip()
        if key and srv.login("zenml-api-key", key).status_code == 200:
            return
    r = srv.api("GET", "/api/v1/service_accounts/" + sa_name)
    if r.status_code == 200:
        sa = r.json()
    else:
        sa = srv.create_service_account(
            sa_name, description="zenmlfs development mount")
    if not sa["body"]["active"]:
        srv.api("PUT", "/api/v1/service_accounts/" + sa["id"],
                json={"active": True}).raise_for_status()
    r = srv.api("GET", "/api/v1/service_accounts/%s/api_keys/%s"
                % (sa["id"], key_name))
    if r.status_code == 200:
        if not r.json()["body"]["active"]:
            srv.set_api_key_active(sa["id"], key_name, True)
        key = srv.rotate_api_key(sa["id"], key_name)["body"]["key"]
    else:
        key = srv.create_api_key(sa["id"], key_name)["body"]["key"]
    tmp = key_file + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.rename(tmp, key_file)


def main(argv):
    usage = ("usage: zenserver.py start DIR [PORT] | stop DIR | "
             "ensure-key DIR SA_NAME KEY_FILE | run DIR [PORT]")
    if len(argv) < 2:
        sys.exit(usage)
    cmd, d = argv[0], os.path.abspath(argv[1])
    os.makedirs(d, mode=0o700, exist_ok=True)
    if cmd == "start":
        cli_start(d, int(argv[2]) if len(argv) > 2 else 8237)
    elif cmd == "stop":
        cli_stop(d)
    elif cmd == "ensure-key" and len(argv) == 4:
        cli_ensure_key(d, argv[2], argv[3])
    elif cmd == "run":
        srv = ZenServer(d, port=int(argv[2]) if len(argv) > 2 else None)
        srv.start()
        print(srv.url, flush=True)
        try:
            srv.proc.wait()
        except KeyboardInterrupt:
            srv.stop()
    else:
        sys.exit(usage)


if __name__ == "__main__":
    main(sys.argv[1:])
