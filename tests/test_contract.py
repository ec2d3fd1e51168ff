"""Issue "The user's contract": exit codes and messages as documented,
checks in the order a user needs them, login and logout at their edges,
devices that say what they are, what the log says, and `zenmlfs status`.

Each test runs zenmlfs as a user would (a subprocess, a real server, real
mounts) and asserts the exit code and the exact first line of stderr.
This module runs its own server with a fast device flow (test_devices).
"""

import os
import platform
import re
import signal
import subprocess
import time

import pytest

from conftest import (ZENMLFS_BIN, _base_env, _fusermount_u, _tmpdir,
                      is_mounted, run_zenmlfs)
from test_devices import (DeviceServer, new_state, server_device, state_env,
                          verify)
from zenserver import clean_env, fake_api_key, free_port

TRY = "Try 'zenmlfs --help'."


# A server of its own, as test_devices.py's (conftest's zenml_server).
ZENML_SERVER_CLASS = DeviceServer


def keyfile(tmp_path, key, mode=0o600):
    p = tmp_path / "api-key"
    p.write_text(key + "\n")
    p.chmod(mode)
    return str(p)


def first_line(s):
    return s.split("\n", 1)[0]


def lines(s):
    return [ln for ln in s.split("\n") if ln]


@pytest.fixture
def mnt(tmp_path):
    d = tmp_path / "mnt"
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    yield str(d)
    if is_mounted(str(d)):
        _fusermount_u(str(d))


# ---------------------------------------------- 1. every exit code, 3. lines


def test_exit_1_usage(zenml_server, mnt):
    r = run_zenmlfs(["--url", zenml_server.url, "-o", "bogus", mnt])
    assert r.returncode == 1
    assert lines(r.stderr) == ["zenmlfs: unknown mount option 'bogus'", TRY]
    r = run_zenmlfs(["--url", zenml_server.url, "-o", "token_lifetime=5",
                     mnt])
    assert r.returncode == 1
    assert lines(r.stderr) == [
        "zenmlfs: invalid value '5' for option 'token_lifetime' "
        "(expected 60 to 31536000)", TRY]
    r = run_zenmlfs(["--url", zenml_server.url])
    assert r.returncode == 1
    assert lines(r.stderr) == ["zenmlfs: missing MOUNTPOINT", TRY]
    r = run_zenmlfs(["--bogus", mnt])
    assert r.returncode == 1
    assert lines(r.stderr)[-1] == TRY and len(lines(r.stderr)) == 2
    r = run_zenmlfs([mnt])
    assert r.returncode == 1
    assert first_line(r.stderr).startswith("zenmlfs: no server URL")
    # --help and --version: standard output, exit 0
    r = run_zenmlfs(["--help"])
    assert r.returncode == 0 and r.stdout.startswith("usage: zenmlfs")
    assert r.stderr == ""
    r = run_zenmlfs(["--version"])
    assert r.returncode == 0 and re.match(r"zenmlfs \d+\.\d+", r.stdout)


def test_exit_2_no_credential(zenml_server, mnt, tmp_path):
    r = run_zenmlfs(["--url", zenml_server.url, mnt])
    assert r.returncode == 2
    assert lines(r.stderr) == [
        "zenmlfs: no credential for '%s': set ZENML_STORE_API_KEY, pass "
        "--api-key-file FILE, or run 'zenmlfs login %s'"
        % (zenml_server.url, zenml_server.url)]
    r = run_zenmlfs(["--url", zenml_server.url, "--api-key-file",
                     "/nonexistent", mnt])
    assert r.returncode == 2
    assert lines(r.stderr) == [
        "zenmlfs: cannot open API key file '/nonexistent': No such file or "
        "directory"]


def test_exit_2_key_file_others_may_read(zenml_server, mnt, tmp_path):
    kf = keyfile(tmp_path, fake_api_key(), 0o644)
    r = run_zenmlfs(["--url", zenml_server.url, "--api-key-file", kf, mnt])
    assert r.returncode == 2
    assert len(lines(r.stderr)) == 1
    assert "has mode 0644" in r.stderr and "chmod 600" in r.stderr
    assert not is_mounted(mnt)


def test_exit_3_bad_url_unreachable_retried(mnt, tmp_path):
    """A bad URL ends the start with 3; a server that does not answer is
    not a failure: the daemon says so on the terminal and tries again,
    mounting nothing meanwhile, until it is stopped."""
    kf = keyfile(tmp_path, fake_api_key())
    r = run_zenmlfs(["--url", "notaurl", "--api-key-file", kf, mnt])
    assert r.returncode == 3
    assert lines(r.stderr) == [
        "zenmlfs: invalid server URL 'notaurl': it must start with http:// "
        "or https://"]
    url = "http://127.0.0.1:%d" % free_port()
    p = subprocess.Popen([ZENMLFS_BIN, "-f", "--url", url, "--api-key-file",
                          kf, "-o", "start_delay=0", mnt],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True,
                         env=_base_env(_tmpdir("home")))
    try:
        said = [p.stderr.readline().rstrip("\n") for _ in range(2)]
        assert p.poll() is None, said
        for line in said:
            assert re.fullmatch(
                r"zenmlfs: login to '%s' failed: login: connection refused; "
                r"trying again in [0-9.]+ s" % re.escape(url), line), said
        assert not is_mounted(mnt)
    finally:
        p.terminate()
        p.wait(10)
        p.stderr.close()
    assert not is_mounted(mnt)


def test_exit_4_rejected(zenml_server, mnt, tmp_path):
    kf = keyfile(tmp_path, fake_api_key())
    r = run_zenmlfs(["--url", zenml_server.url, "--api-key-file", kf, mnt])
    assert r.returncode == 4
    assert len(lines(r.stderr)) == 1
    assert first_line(r.stderr).startswith(
        "zenmlfs: cannot log in to '%s': login: server said 401"
        % zenml_server.url)


def test_exit_5_mount(zenml_server, service_account, tmp_path):
    kf = keyfile(tmp_path, service_account.key)
    r = run_zenmlfs(["--url", zenml_server.url, "--api-key-file", kf,
                     str(tmp_path / "nope")])
    assert r.returncode == 5
    assert lines(r.stderr) == [
        "zenmlfs: cannot mount at '%s': No such file or directory"
        % (tmp_path / "nope")]
    r = run_zenmlfs(["--url", zenml_server.url, "--api-key-file", kf, kf])
    assert r.returncode == 5
    assert lines(r.stderr) == [
        "zenmlfs: cannot mount at '%s': not a directory" % kf]


def test_exit_5_already_mounted(zenml_server, service_account, mount,
                                tmp_path):
    m = mount(service_account.key)
    kf = keyfile(tmp_path, service_account.key)
    r = run_zenmlfs(["--url", zenml_server.url, "--api-key-file", kf,
                     m.path])
    assert r.returncode == 5
    assert first_line(r.stderr).startswith(
        "zenmlfs: cannot mount at '%s': zenmlfs is already mounted there"
        % m.path)
    assert m.read("token")


def test_exit_6_other(zenml_server, service_account):
    """Going to the background fails (no process may be forked: a user at
    its process limit): exit 6, one line."""
    import shutil
    import tempfile
    home = tempfile.mkdtemp(prefix="zenmlfs-t-nproc-", dir="/tmp")
    try:
        os.chmod(home, 0o755)
        mntp = os.path.join(home, "mnt")
        os.mkdir(mntp)
        kf = os.path.join(home, "api-key")
        with open(kf, "w") as f:
            f.write(service_account.key + "\n")
        os.chmod(kf, 0o600)
        for p in (home, mntp, kf):
            os.chown(p, 65534, 65534)
        r = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "prlimit", "--nproc=1:1", "--",
             ZENMLFS_BIN, "--url", zenml_server.url, "--api-key-file", kf,
             "--log", os.path.join(home, "log"), mntp],
            # LeakSanitizer needs a thread to check at exit, which the
            # process limit forbids: no leak check here
            env=clean_env({"HOME": home, "ASAN_OPTIONS": "detect_leaks=0"}),
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=60)
        assert r.returncode == 6, (r.returncode, r.stderr)
        assert lines(r.stderr) == [
            "zenmlfs: cannot go to the background: Resource temporarily "
            "unavailable"]
        assert not is_mounted(mntp)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_exit_codes_documented_alike():
    """The table in docs/zenmlfs.md and --help say the same."""
    doc = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                            "docs", "zenmlfs.md")).read()
    helptext = " ".join(run_zenmlfs(["--help"]).stdout.split())
    for code, words in ((0, "clean unmount"), (1, "usage"),
                        (2, "no credential"), (3, "server unreachable"),
                        (4, "credential rejected"), (5, "mount failed"),
                        (6, "other")):
        assert "%d %s" % (code, words) in helptext, (code, helptext)
        row = re.search(r"^\|\s*%d\s*\|([^\n]*)$" % code, doc, re.M)
        assert row and words.split()[-1] in row.group(1).lower(), code


# ------------------------------------------ 2. checks in the user's order


def test_local_checks_before_the_network(zenml_server, service_account,
                                         proxy, tmp_path):
    """Nothing is sent before the arguments, the mount point and the
    credential have been checked."""
    kf = keyfile(tmp_path, service_account.key)
    proxy.reset_counts()
    r = run_zenmlfs(["--url", proxy.url, "--api-key-file", kf,
                     "/does/not/exist"])
    assert r.returncode == 5, r.stderr
    # the mount point comes before the credential
    r = run_zenmlfs(["--url", proxy.url, "/does/not/exist"])
    assert r.returncode == 5, r.stderr
    # a usage error comes before the mount point
    r = run_zenmlfs(["--url", proxy.url, "-o", "nope", "/does/not/exist"])
    assert r.returncode == 1, r.stderr
    # a bad URL before the mount point
    r = run_zenmlfs(["--url", "ftp://x", "/does/not/exist"])
    assert r.returncode == 3, r.stderr
    assert proxy.count("") == 0, proxy.counts


def test_session_expired_says_it_once(zenml_server, tmp_path, mnt):
    """A saved session the server no longer accepts: one line, one hint."""
    root = new_state()
    from test_devices import login_approved
    lg = login_approved(zenml_server, root)
    zenml_server.api("DELETE", "/api/v1/devices/" + lg.device_id)
    r = run_zenmlfs(["--url", zenml_server.url, mnt],
                    env=state_env(root))
    assert r.returncode == 4, r.stderr
    assert len(lines(r.stderr)) == 1, r.stderr
    assert r.stderr.count("zenmlfs login") == 1, r.stderr


# ------------------------------------------------------ 4. login, logout


def test_login_takes_the_url_from_the_environment(zenml_server, state):
    env = clean_env(dict(state_env(state), ZENML_STORE_URL=zenml_server.url))
    p = subprocess.Popen([ZENMLFS_BIN, "login"], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    out = b""
    deadline = time.time() + 20
    while b"user code:" not in out and time.time() < deadline:
        out += p.stdout.read1(4096)
    m = re.search(rb"device_id=([0-9a-f-]{36})&user_code=(\w+)", out)
    assert m, out
    assert verify(zenml_server, m.group(1).decode(),
                  m.group(2).decode()).status_code == 200
    rest, err = p.communicate(timeout=30)
    out += rest
    assert p.returncode == 0, (out, err)
    # no terminal: plain lines, no carriage returns, no countdown
    assert b"\r" not in out, out
    assert b"left" not in out
    assert b"logged in to %s" % zenml_server.url.encode() in out
    env = clean_env(dict(state_env(state), ZENML_STORE_URL=zenml_server.url))
    r = subprocess.run([ZENMLFS_BIN, "logout"], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "logged out of %s: the saved session is gone\n" % \
        zenml_server.url
    zenml_server.api("DELETE", "/api/v1/devices/" + m.group(1).decode())


def test_login_and_logout_help(state):
    for cmd in (["login", "--help"], ["logout", "--help"]):
        r = run_zenmlfs(cmd)
        assert r.returncode == 0, cmd
        assert r.stdout.startswith("usage: zenmlfs login"), r.stdout
        assert r.stderr == ""
    r = run_zenmlfs(["login"])
    assert r.returncode == 1
    assert first_line(r.stderr) == (
        "zenmlfs: no server URL: give it, or set ZENML_STORE_URL")


@pytest.fixture
def state():
    import shutil
    root = new_state()
    yield root
    shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------- 5. devices say what


def test_device_says_what_it_is(zenml_server, state, mount):
    from test_devices import login_approved, mount_session
    lg = login_approved(zenml_server, state)
    try:
        dev = server_device(zenml_server, lg.device_id)
        host = platform.node()
        assert dev["body"]["hostname"] == host, dev["body"]
        assert dev["body"]["os"] == platform.system(), dev["body"]
        assert dev["metadata"]["zenml_version"].startswith("zenmlfs-"), \
            dev["metadata"]
        m = mount_session(mount, state, opts="tree_mode=0700")
        assert m.text("devices/%s/hostname" % lg.device_id) == host + "\n"
        assert m.text("devices/%s/os" % lg.device_id) == \
            platform.system() + "\n"
    finally:
        zenml_server.api("DELETE", "/api/v1/devices/" + lg.device_id)


# ----------------------------------------------- 6. what the log tells


def test_refused_write_names_the_accepted_values(zenml_server,
                                                 service_account, mount):
    m = mount(service_account.key)
    m.expect_errors = True
    try:
        m.write("refresh", "2\n")
    except OSError:
        pass
    assert "write 1 (or true, yes, on) to mint a new token" in m.log()
    assert "invalid value" in m.log()


def test_log_names_the_absolute_mount_point_and_one_pid(zenml_server,
                                                        service_account,
                                                        tmp_path):
    """A mount made with a relative path, in the background: the log
    names the absolute path, and every line carries the daemon's PID."""
    kf = keyfile(tmp_path, service_account.key)
    (tmp_path / "rel").mkdir()
    os.chmod(tmp_path, 0o755)
    log = tmp_path / "zenmlfs.log"
    r = subprocess.run([ZENMLFS_BIN, "--url", zenml_server.url,
                        "--api-key-file", kf, "--log", str(log), "rel"],
                       cwd=str(tmp_path), env=clean_env(),
                       stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60)
    mntp = str(tmp_path / "rel")
    try:
        assert r.returncode == 0, r.stderr
        assert is_mounted(mntp)
        os.stat(os.path.join(mntp, "status"))
    finally:
        _fusermount_u(mntp)
    time.sleep(0.5)
    text = log.read_text()
    assert "at '%s'" % mntp in text, text
    pids = set(re.findall(r"zenmlfs\[(\d+)\]", text))
    assert len(pids) == 1, text


def test_lost_log_is_warned_about(zenml_server, service_account, tmp_path,
                                  mnt):
    """In the background with no --log and no syslog socket, every line
    would be lost: the terminal is told."""
    if os.path.exists("/dev/log"):
        pytest.skip("this machine has a syslog socket")
    kf = keyfile(tmp_path, service_account.key)
    r = run_zenmlfs(["--url", zenml_server.url, "--api-key-file", kf, mnt])
    assert r.returncode == 0, r.stderr
    assert first_line(r.stderr) == (
        "zenmlfs: warning: no syslog socket (/dev/log) and no --log: the "
        "daemon's log will be lost (pass --log FILE)")


# ------------------------------------------------------------ 7. status


def run_status(*args, timeout=20):
    t = time.monotonic()
    r = subprocess.run([ZENMLFS_BIN, "status"] + list(args),
                       capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    r.took = time.monotonic() - t
    return r


def test_status_command(zenml_server, service_account, proxy, mount,
                        tmp_path):
    srv = zenml_server
    m = mount(service_account.key, "token_lifetime=600,check_interval=1",
              url=proxy.url)
    m.expect_errors = True
    r = run_status(m.path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == m.text("status") or \
        r.stdout.startswith("state: ok\n"), r.stdout
    # degraded: a refresh failed, the token still served
    proxy.add_fault("/api/v1/api_token", "status", status=503)
    try:
        m.write("refresh", "1\n")
    except OSError:
        pass
    r = run_status(m.path)
    assert r.returncode == 1 and "state: degraded" in r.stdout, r.stdout
    proxy.clear_faults()
    # unauthenticated: the key deactivated
    srv.set_api_key_active(service_account.id, service_account.key_id,
                           False)
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            m.read("token")
        except OSError:
            break
        time.sleep(0.3)
    r = run_status(m.path)
    assert r.returncode == 2, r.stdout
    assert "state: unauthenticated" in r.stdout
    srv.set_api_key_active(service_account.id, service_account.key_id, True)
    # not a zenmlfs mount
    r = run_status(str(tmp_path))
    assert r.returncode == 3
    assert first_line(r.stderr) == "zenmlfs: status: '%s' is not a zenmlfs " \
        "mount" % tmp_path
    # a daemon that does not answer: 3 within about 2 s
    os.kill(m.proc.pid, signal.SIGSTOP)
    try:
        r = run_status(m.path)
    finally:
        os.kill(m.proc.pid, signal.SIGCONT)
    assert r.returncode == 3
    assert r.took < 4, r.took
    assert "does not answer within 2 s" in r.stderr
    r = run_status("--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: zenmlfs status")
