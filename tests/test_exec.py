"""Issue 21, "zenmlfs exec": the ZenML SDK and CLI, as shipped, use the
mount's current token on every request for as long as their command runs,
with nothing worth stealing in the command's environment, argv or files.

Sandboxes: bubblewrap (started as root, the command as uid 65534 through
setpriv) around /usr, the Python venv and the zenmlfs binary, read-only,
and the host layout's folder (docs/containers.md) at /zen-host: the API
key is nowhere in there.  The SDK script reads "call" lines on stdin and
prints one line per call ("OK n name" or "ERR n Exception message").

test_long_sdk_follows_refreshes_restart_and_rotation is LONG (about 3.5 min:
three token lifetimes of 60 s; marked `long`); `-m "not long"` skips it.
"""

import errno
import http.server
import json
import os
import re
import queue
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import SANITIZED, TMP_PREFIX, ZENMLFS_BIN, _base_env
from test_containers import HostLayout, OPTS

VENV = sys.prefix
PYROOT = sys.base_prefix
LIFETIME = 60
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
ADMIN_ENV = {"ZENML_STORE_USERNAME": "default", "ZENML_STORE_PASSWORD": ""}

SDK_LOOP = r"""
import os, sys
from zenml.client import Client
print("ENV", " ".join("%s=%s" % kv for kv in sorted(os.environ.items())),
      flush=True)
store = Client().zen_store
print("READY", Client().active_user.name, flush=True)
n = 0
for line in sys.stdin:
    if line.strip() == "quit":
        break
    try:
        print("OK", n, store.get_user().name, flush=True)
    except Exception as e:
        # the SDK's message, and what it was raised from: from 0.9x the
        # server's (here, the channel's) message is the SDK's; before, the
        # SDK tries to log in again and raises its own from it
        why = [str(e)] + [str(x) for x in (e.__cause__, e.__context__) if x]
        print("ERR", n, type(e).__name__, " | ".join(why).replace("\n", " "),
              flush=True)
        if line.strip() == "call-or-exit":
            sys.exit(3)
    n += 1
"""

PIPELINE = r"""
from zenml import pipeline, step

@step
def make() -> int:
    return 20

@step
def double(x: int) -> int:
    return 2 * x

@pipeline(enable_cache=False)
def twostep():
    double(make())

run = twostep()
print("RUN", run.id, run.status, flush=True)
"""


def exec_env(home):
    env = _base_env(home)
    env.update(ZENML_ANALYTICS_OPT_IN="false", ZENML_CONFIG_PATH=os.path.join(
        home, "zenml"), PATH=os.path.join(VENV, "bin") + ":" + env["PATH"])
    return env


def parents(path):
    """bwrap options making path's parents, traversable by anyone."""
    out, cur = [], ""
    for part in path.strip("/").split("/")[:-1]:
        cur += "/" + part
        out += ["--perms", "0755", "--dir", cur]
    return out


class Sandbox:
    """A bubblewrap sandbox running one command as uid 65534."""

    def __init__(self, host_dir, argv, app_dir, stdin=subprocess.PIPE):
        cmd = ["bwrap", "--unshare-pid", "--die-with-parent",
               "--proc", "/proc", "--dev", "/dev",
               "--perms", "1777", "--tmpfs", "/tmp",
               "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
               "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64",
               "/lib64", "--symlink", "usr/sbin", "/sbin",
               "--ro-bind", "/etc/passwd", "/etc/passwd",
               "--ro-bind", "/etc/group", "/etc/group",
               ] + parents(PYROOT) + parents(VENV) + parents("/opt/zenmlfs") + [
               "--ro-bind", PYROOT, PYROOT, "--ro-bind", VENV, VENV,
               "--ro-bind", os.path.abspath(ZENMLFS_BIN), "/opt/zenmlfs",
               "--ro-bind", app_dir, "/app",
               "--ro-bind", host_dir, "/zen-host", "--chdir", "/tmp",
               "--clearenv", "--setenv", "HOME", "/tmp",
               "--setenv", "USER", "nobody",
               "--setenv", "PATH", VENV + "/bin:/usr/bin",
               "--setenv", "ZENML_ANALYTICS_OPT_IN", "false",
               "--setenv", "ZENML_CONFIG_PATH", "/tmp/zenml",
               "setpriv", "--reuid=65534", "--regid=65534",
               "--clear-groups", "--"] + argv
        self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     bufsize=1)
        self.out = []
        # a thread reads the lines (select on a buffered pipe would miss
        # a second line already read into the buffer)
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for ln in self.proc.stdout:
            self.lines.put(ln.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout=60):
        """The next line of output (the test fails after timeout)."""
        try:
            ln = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail("no output within %s s: %s" % (timeout, self.out))
        assert ln is not None, "sandbox ended: %s" % self.out
        self.out.append(ln)
        return ln

    def expect(self, prefix, timeout=120):
        while True:
            ln = self.line(timeout)
            if ln.startswith(prefix):
                return ln

    def send(self, s):
        self.proc.stdin.write(s + "\n")
        self.proc.stdin.flush()

    def call(self, how="call"):
        self.send(how)
        return self.expect(("OK ", "ERR "))

    def finish(self, timeout=60):
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout)
        self.reader.join(timeout)
        while True:
            ln = self.lines.get(timeout=timeout)
            if ln is None:
                return self.proc.returncode
            self.out.append(ln)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def app_dir():
    d = tempfile.mkdtemp(prefix=TMP_PREFIX + "app-", dir="/tmp")
    os.chmod(d, 0o755)
    for name, text in (("sdk_loop.py", SDK_LOOP), ("pipeline.py", PIPELINE)):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def layout(zenml_server):
    made = []

    def factory(key):
        h = HostLayout(zenml_server.url, key)
        made.append(h)
        return h
    yield factory
    for h in made:
        h.close()


@pytest.fixture
def sandboxes():
    made = []

    def factory(*a, **kw):
        s = Sandbox(*a, **kw)
        made.append(s)
        return s
    yield factory
    for s in made:
        s.kill()


EXEC = ["/opt/zenmlfs", "exec", "--mount", "/zen-host/zen"]


def sdk_sandbox(sandboxes, h, app_dir, extra=()):
    sb = sandboxes(h.dir, EXEC + list(extra) +
                   ["--", "python", "/app/sdk_loop.py"], app_dir)
    env_line = sb.expect("ENV ")
    sb.expect("READY ")
    return sb, env_line


def check_env(env_line, tokens):
    """Nothing in COMMAND's environment is a token the server takes."""
    assert not JWT.search(env_line), env_line
    for t in tokens:
        assert t not in env_line
    assert "ZENML_STORE_URL=http://127.0.0.2:" in env_line
    assert "DISABLE_CREDENTIALS_DISK_CACHING=true" in env_line
    return re.search(r"ZENML_STORE_API_TOKEN=(\S+)", env_line).group(1)


# ------------------------------------------------------------------- long


@pytest.mark.long
def test_long_sdk_follows_refreshes_restart_and_rotation(
        zenml_server, service_account, layout, sandboxes, app_dir):
    """LONG: calls every 3 s for three token lifetimes (60 s each), a
    daemon restart after the first, a rotation of its key (the new key
    written to the key file, SIGHUP) after the second: every call passes,
    and the server saw at least three tokens."""
    sa = service_account
    h = layout(sa.key)
    h.start(OPTS + ",token_lifetime=%d" % LIFETIME)
    seen = {h.token()}
    sb, env_line = sdk_sandbox(sandboxes, h, app_dir)
    check_env(env_line, seen)
    t0 = time.monotonic()
    restarted = rotated = False
    results = []
    while time.monotonic() - t0 < 3 * LIFETIME + 5:
        results.append(sb.call())
        try:
            seen.add(h.token())
        except OSError:
            pass
        el = time.monotonic() - t0
        if not restarted and el > LIFETIME:
            h.daemons[-1].stop()
            h.start(OPTS + ",token_lifetime=%d" % LIFETIME)
            restarted = True
            results.append(sb.call())       # at once after the restart
        elif not rotated and el > 2 * LIFETIME:
            new = zenml_server.rotate_api_key(sa.id, sa.key_id,
                                              retain_minutes=5)
            new_key = new["body"]["key"]
            with open(h.key_file, "w") as f:
                f.write(new_key + "\n")
            before = h.token()
            h.daemons[-1].proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 60
            while h.token() == before:      # the new key's first token
                assert time.monotonic() < deadline, \
                    "no token from the new key 60 s after SIGHUP"
                time.sleep(0.2)
            rotated = True
            results.append(sb.call())
        time.sleep(3)
    bad = [r for r in results if not r.startswith("OK ")]
    assert not bad, bad
    assert restarted and rotated
    assert len(seen) >= 4, "only %d tokens over 3 lifetimes" % len(seen)
    sb.send("quit")
    assert sb.finish() == 0, sb.out
    print("\nexec: %d SDK calls over %.0f s, %d tokens, all OK"
          % (len(results), time.monotonic() - t0, len(seen)))


# ------------------------------------------------------------- the CLI


def test_zenml_cli_stack_list_in_sandbox(zenml_server, service_account,
                                         layout, sandboxes, app_dir):
    h = layout(service_account.key)
    h.start()
    sb = sandboxes(h.dir, EXEC + ["--", "zenml", "stack", "list"], app_dir,
                   stdin=subprocess.DEVNULL)
    assert sb.finish(120) == 0, "\n".join(sb.out)
    text = "\n".join(sb.out)
    assert "default" in text, text


def test_zenml_cli_service_account_list_admin(zenml_server, service_account,
                                              mount, tmp_path):
    m = mount(None, "", env_extra=dict(ADMIN_ENV))
    r = subprocess.run([ZENMLFS_BIN, "exec", "--mount", m.path, "--",
                        "zenml", "service-account", "list"],
                       env=exec_env(str(tmp_path)), text=True,
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert service_account.name in r.stdout, r.stdout


# -------------------------------------------------------------- errors


def test_revoked_key_is_a_401_naming_it(zenml_server, service_account,
                                        layout, sandboxes, app_dir):
    sa = service_account
    h = layout(sa.key)
    h.start(OPTS + ",check_interval=2")
    sb, _ = sdk_sandbox(sandboxes, h, app_dir, ["--wait", "1"])
    assert sb.call().startswith("OK ")
    zenml_server.set_api_key_active(sa.id, sa.key_id, False)
    deadline = time.monotonic() + 30
    while True:     # the daemon notices (check_interval=2)
        try:
            h.token()
        except OSError as e:
            assert e.errno in (errno.EKEYREVOKED, errno.EKEYREJECTED), e
            break
        assert time.monotonic() < deadline, "the mount still serves"
        time.sleep(0.2)
    ln = sb.call("call-or-exit")
    assert ln.startswith("ERR ") and "CredentialsNotValid" in ln, ln
    assert "revoked" in ln and "/zen-host/zen/token" in ln, ln
    # exec's status is COMMAND's
    assert sb.finish() == 3, sb.out
    # the CLI prints the cause too
    sb2 = sandboxes(h.dir, EXEC + ["--wait", "1", "--", "zenml", "stack",
                                   "list"], app_dir,
                    stdin=subprocess.DEVNULL)
    code = sb2.finish(120)
    text = "\n".join(sb2.out)
    assert code != 0 and "revoked" in text, text


def test_missing_mount_is_a_401_naming_it(zenml_server, service_account,
                                          layout, sandboxes, app_dir):
    h = layout(service_account.key)
    h.start()
    sb, _ = sdk_sandbox(sandboxes, h, app_dir, ["--wait", "1"])
    assert sb.call().startswith("OK ")
    h.daemons[-1].stop()
    ln = sb.call()
    assert "CredentialsNotValid" in ln, ln
    assert "no zenmlfs daemon serves '/zen-host/zen'" in ln, ln
    sb.send("quit")
    assert sb.finish() == 0


# ----------------------------------------------------- the channel's guard


GUARD = r"""
import os, sys, urllib.request, urllib.error
url, value = os.environ["ZENML_STORE_URL"], os.environ["ZENML_STORE_API_TOKEN"]
print("URL", url, value, flush=True)
def get(tok):
    rq = urllib.request.Request(url + "/api/v1/current-user")
    if tok:
        rq.add_header("Authorization", "Bearer " + tok)
    try:
        return urllib.request.urlopen(rq, timeout=30).status
    except urllib.error.HTTPError as e:
        return e.code
print("WITH", get(value), flush=True)
if len(sys.argv) > 1 and sys.argv[1] == "wait":
    sys.stdin.readline()
else:       # another process of the sandbox: without the value, a wrong one
    import subprocess
    env = {k: v for k, v in os.environ.items()
           if k != "ZENML_STORE_API_TOKEN"}
    # a wrong value: the last character changed (never to itself)
    wrong = value[:-1] + ("B" if value.endswith("A") else "A")
    for extra in ([], [wrong]):
        subprocess.run([sys.executable, "/app/other.py", url] + extra,
                       env=env)
"""

OTHER = r"""
import sys, urllib.request, urllib.error
url, tok = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None
rq = urllib.request.Request(url + "/api/v1/current-user")
if tok:
    rq.add_header("Authorization", "Bearer " + tok)
try:
    print("STATUS", urllib.request.urlopen(rq, timeout=30).status)
except urllib.error.HTTPError as e:
    print("STATUS", e.code, e.read().decode(), flush=True)
except OSError as e:
    print("STATUS", "refused", e)
"""


def test_other_process_in_sandbox_is_refused(
        zenml_server, service_account, layout, sandboxes, app_dir):
    """In the sandbox, a process without the run's value (or with a wrong
    one) is refused by the channel; after exec ends, nothing answers."""
    h = layout(service_account.key)
    h.start()
    with open(os.path.join(app_dir, "guard.py"), "w") as f:
        f.write(GUARD)
    with open(os.path.join(app_dir, "other.py"), "w") as f:
        f.write(OTHER)
    script = ('/opt/zenmlfs exec --mount /zen-host/zen -- python '
              '/app/guard.py </dev/null >/tmp/out; echo "EXEC $?"; '
              'cat /tmp/out; python /app/other.py $(sed -n "s/^URL //p" '
              '/tmp/out)')
    sb = sandboxes(h.dir, ["sh", "-c", script], app_dir,
                   stdin=subprocess.DEVNULL)
    assert sb.finish(120) == 0, sb.out
    out = sb.out
    assert "EXEC 0" in out, out
    assert "WITH 200" in out, out
    st = [ln for ln in out if ln.startswith("STATUS ")]
    assert len(st) == 3, out
    # no value: passed on with no token, the server answers as it answers
    # anyone
    direct = zenml_server.api("GET", "/api/v1/current-user",
                            token="").status_code
    assert st[0].startswith("STATUS %d" % direct), st[0]
    assert "zenmlfs" not in st[0], st[0]
    # a wrong value: the channel's
    assert st[1].startswith("STATUS 401 ") and "ZENML_STORE_API_TOKEN" in \
        st[1], st[1]
    assert st[2].startswith("STATUS refused"), st[2]


def test_channel_guard(zenml_server, service_account, layout, app_dir,
                       tmp_path):
    """Same machine, outside a sandbox (the channel is a loopback port,
    which every process of the network namespace reaches): no value, a
    wrong value -> 401; the value -> 200; after exec: refused, and the
    value is refused by the server itself."""
    h = layout(service_account.key)
    h.start()
    with open(os.path.join(app_dir, "guard.py"), "w") as f:
        f.write(GUARD)
    p = subprocess.Popen([ZENMLFS_BIN, "exec", "--mount", h.mnt, "--",
                          sys.executable, os.path.join(app_dir,
                                                       "guard.py"), "wait"],
                         env=exec_env(str(tmp_path)), text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        _, url, value = p.stdout.readline().split()
        assert p.stdout.readline().strip() == "WITH 200"

        def get(tok):
            rq = urllib.request.Request(url + "/api/v1/current-user")
            if tok:
                rq.add_header("Authorization", "Bearer " + tok)
            try:
                return urllib.request.urlopen(rq, timeout=30).status, ""
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
        assert get(value)[0] == 200
        # no Authorization: passed on with no token, the server refuses
        code, body = get(None)
        assert code == zenml_server.api("GET", "/api/v1/current-user", token=""
                                        ).status_code, code
        assert "ZENML_STORE_API_TOKEN" not in body, body
        for tok in (value + "x", value[:-1], h.token()):
            code, body = get(tok)
            assert code == 401, code
            assert "ZENML_STORE_API_TOKEN" in body, body
        p.stdin.write("\n")
        p.stdin.close()
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
    with pytest.raises(urllib.error.URLError):
        get(value)
    # the value never was a credential
    assert zenml_server.current_user(value).status_code == 401


# ------------------------------------------------------ a good citizen


def test_exit_status_and_signals(zenml_server, service_account, layout,
                                 tmp_path):
    h = layout(service_account.key)
    h.start()
    env = exec_env(str(tmp_path))
    base = [ZENMLFS_BIN, "exec", "--mount", h.mnt, "--"]
    assert subprocess.run(base + ["sh", "-c", "exit 7"], env=env,
                          timeout=30).returncode == 7
    # COMMAND killed by a signal: exec dies of the same signal
    assert subprocess.run(base + ["sh", "-c", "kill -TERM $$"], env=env,
                          timeout=30).returncode == -signal.SIGTERM
    assert subprocess.run(base + ["no-such-command-x"], env=env,
                          timeout=30).returncode == 127
    # a signal sent to exec reaches COMMAND, which decides
    p = subprocess.Popen(base + ["sh", "-c", "trap 'exit 42' TERM; echo up; "
                                 "while :; do sleep 0.1; done"], env=env,
                         stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    assert p.stdout.readline().strip() == "up"
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 42
    # nothing left: no process of that session, no listener of ours
    out = subprocess.run(["ps", "-o", "pid=", "-s", str(p.pid)],
                         capture_output=True, text=True).stdout.split()
    assert out == [], out


def test_sidecar_env_file(zenml_server, service_account, layout, tmp_path):
    """--listen and --env-file, no COMMAND: a service started apart uses
    the same channel; SIGTERM removes the file and the listener."""
    h = layout(service_account.key)
    h.start()
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    port = s.getsockname()[1]
    s.close()
    env_file = str(tmp_path / "zen.env")
    p = subprocess.Popen([ZENMLFS_BIN, "exec", "--mount", h.mnt, "--listen",
                          "127.0.0.2:%d" % port, "--env-file", env_file],
                         env=exec_env(str(tmp_path)))
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(env_file):
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        assert os.stat(env_file).st_mode & 0o777 == 0o600
        env = exec_env(str(tmp_path / "svc"))
        with open(env_file) as f:
            for ln in f:
                k, v = ln.rstrip("\n").split("=", 1)
                env[k] = v
        assert env["ZENML_STORE_URL"] == "http://127.0.0.2:%d" % port
        r = subprocess.run([sys.executable, "-c",
                            "from zenml.client import Client;"
                            "print(Client().active_user.name)"],
                           env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1] == service_account.name
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 128 + signal.SIGTERM
        assert not os.path.exists(env_file)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), 2)
    finally:
        if p.poll() is None:
            p.kill()


# ---------------------------------------------------------- a pipeline


def test_two_step_pipeline_local_orchestrator(zenml_server, service_account,
                                              layout, app_dir, tmp_path):
    h = layout(service_account.key)
    h.start()
    r = subprocess.run([ZENMLFS_BIN, "exec", "--mount", h.mnt, "--",
                        sys.executable, os.path.join(app_dir, "pipeline.py")],
                       env=exec_env(str(tmp_path)), cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = re.search(r"^RUN (\S+) (\S+)$", r.stdout, re.M)
    assert m and m.group(2) == "completed", r.stdout[-2000:]
    run = zenml_server.api("GET", "/api/v1/runs/" + m.group(1),
                           token=zenml_server.admin_token()).json()
    assert run["body"]["status"] == "completed"


# --------------------------------------- the channel's mechanics, and TLS


class Upstream(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class UpstreamHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    BIG = 64 * 1024 * 1024

    def log_message(self, *a):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding") == "chunked":
            n = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if not size:
                    self.rfile.readline()
                    return n
                n += len(self.rfile.read(size))
                self.rfile.readline()
        return len(self.rfile.read(int(self.headers.get("Content-Length",
                                                        0))))

    def do_GET(self):
        if self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(self.BIG))
            self.end_headers()
            block = b"z" * 65536
            for _ in range(self.BIG // len(block)):
                self.wfile.write(block)
            return
        self._echo(0)

    def do_POST(self):
        self._echo(self._body())

    do_PUT = do_POST

    def _echo(self, n):
        body = json.dumps({"auth": self.headers.get("Authorization"),
                           "method": self.command, "path": self.path,
                           "len": n,
                           "host": self.headers.get("Host")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def tls_upstream(tmp_path):
    key, crt = str(tmp_path / "k.pem"), str(tmp_path / "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True)
    srv = Upstream(("127.0.0.1", 0), UpstreamHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "https://127.0.0.1:%d" % srv.server_address[1], crt
    srv.shutdown()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmHWM:"):
                return int(ln.split()[1])
    return 0


MECHANICS = r"""
import concurrent.futures, json, os, sys, requests
url, value = os.environ["ZENML_STORE_URL"], os.environ["ZENML_STORE_API_TOKEN"]
s = requests.Session()
s.headers["Authorization"] = "Bearer " + value
out = {}
r = s.get(url + "/echo?a=1")
out["get"] = r.json()
r = s.post(url + "/up", data=b"x" * 3000000)
out["post"] = r.json()
r = s.put(url + "/chunked", data=(b"y" * 100000 for _ in range(30)))
out["chunked"] = r.json()
n = 0
with s.get(url + "/big", stream=True) as r:
    for b in r.iter_content(1 << 16):
        n += len(b)
out["big"] = n
def one(i):
    return s.get(url + "/c%d" % i).json()["path"]
with concurrent.futures.ThreadPoolExecutor(16) as ex:
    out["concurrent"] = sorted(ex.map(one, range(200)))
print(json.dumps(out), flush=True)
print("PID", os.getppid(), flush=True)
"""


def test_channel_streams_keeps_alive_and_verifies_tls(
        zenml_server, service_account, layout, tls_upstream, tmp_path):
    """Against a TLS server of the test's own (self-signed, trusted with
    --cafile): the token replaces the value, bodies go both ways (sized,
    chunked, 64 MiB down) with exec's memory bounded, 200 requests from 16
    threads; without --cafile the TLS failure is a 502 naming it."""
    url, crt = tls_upstream
    h = layout(service_account.key)
    h.start()
    script = str(tmp_path / "mech.py")
    with open(script, "w") as f:
        f.write(MECHANICS)
    env = exec_env(str(tmp_path))
    p = subprocess.Popen([ZENMLFS_BIN, "exec", "--mount", h.mnt, "--url",
                          url, "--cafile", crt, "--", sys.executable,
                          script], env=env, stdout=subprocess.PIPE,
                         text=True)
    line = p.stdout.readline()
    pid = int(p.stdout.readline().split()[1])
    hwm = rss_kib(pid)
    p.stdout.read()
    assert p.wait(60) == 0
    out = json.loads(line)
    tok = h.token()
    assert out["get"]["auth"] == "Bearer " + tok
    assert out["get"]["path"] == "/echo?a=1"
    assert out["post"]["len"] == 3000000 and out["post"]["auth"]
    assert out["chunked"]["len"] == 3000000
    assert out["chunked"]["method"] == "PUT"
    assert out["big"] == UpstreamHandler.BIG
    assert out["concurrent"] == sorted("/c%d" % i for i in range(200))
    # streamed, not buffered (ASan's allocator keeps freed memory in
    # quarantine: its peak says nothing about exec's)
    if not SANITIZED:
        assert hwm < 48 * 1024, "exec peaked at %d KiB" % hwm
    # no --cafile: refused, and said so
    r = subprocess.run([ZENMLFS_BIN, "exec", "--mount", h.mnt, "--url", url,
                        "--", sys.executable, "-c",
                        "import os, urllib.request as u, urllib.error as e\n"
                        "rq = u.Request(os.environ['ZENML_STORE_URL'] + '/x',"
                        " headers={'Authorization': 'Bearer ' + "
                        "os.environ['ZENML_STORE_API_TOKEN']})\n"
                        "try: u.urlopen(rq)\n"
                        "except e.HTTPError as x: print(x.code, x.read())"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("502 "), r.stdout + r.stderr
    assert "SSL" in r.stdout or "certificate" in r.stdout, r.stdout
