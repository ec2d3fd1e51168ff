"""Issue "/zen/service-accounts": service accounts and their API keys as
folders, their attributes as files, and the control files active, rotate
and key.

Every test acts on the mount as a user would (mkdir, rmdir, open/read/write)
and checks the effect on the real ZenML server with its own REST calls.
Admin actions need an admin: those mounts log in as the server's
auto-activated admin ("default", empty password) instead of with a key.
"""

import base64
import errno
import json
import os
import re
import secrets
import time

import pytest
import requests

from conftest import (SAS, TOKENS_BOUND, ZENML_VERSION, attr, nobody_op,
                      os_error, until_asked_again)
from zenserver import jwt_claims

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
SA_ATTRS = ("id", "full_name", "description", "created", "updated")
KEY_ATTRS = ("id", "description", "created", "updated", "last_login",
             "last_rotated", "retain_period_minutes")
DENIED = (errno.EACCES, errno.EPERM)
ACCEPTED_TRUE = ("1", "1\n", "true", "TRUE\n", "True", "yes", "YeS\n",
                 "on", "ON\n")
ACCEPTED_FALSE = ("0", "0\n", "false", "FALSE\n", "False", "no", "NO\n",
                  "off", "oFf\n")
BAD_BOOLS = (b"2", b"2\n", b"banana", b"\n", b" 1", b"1 ", b"1\n\n",
             b"truee", b"-1", b"10", b"y", b"n")
BAD_ROTATE = (b"abc", b"abc\n", b"-1", b"-1\n", b"99999999999999999999",
              b"99999999999999999999\n", b"1.5", b"1.5\n", b"\n", b" 1",
              b"1 ", b"0x10", b"+5", b"1e3", b"5\n\n")


# ------------------------------------------------------------------ helpers


def ename(e):
    return errno.errorcode.get(e, repr(e))


def uniq(tag="sa"):
    return "zfs-%s-%s" % (tag, secrets.token_hex(4))


def list_all(srv, path, **params):
    """Every item of a server list, page by page (hydrated)."""
    items, page = [], 1
    while True:
        p = {"page": page, "size": 50, "hydrate": "true"}
        p.update(params)
        r = srv.api("GET", path, params=p)
        assert r.status_code == 200, r.text
        j = r.json()
        items += j["items"]
        if page >= j["total_pages"]:
            return items
        page += 1


def rest_sa(srv, name_or_id):
    """Hydrated service account, or None if the server has none."""
    r = srv.api("GET", SAS + "/" + name_or_id, params={"hydrate": "true"})
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()


def rest_sa_names(srv):
    return sorted(i["name"] for i in list_all(srv, SAS))


def rest_key(srv, sa_id, key):
    r = srv.api("GET", "%s/%s/api_keys/%s" % (SAS, sa_id, key),
                params={"hydrate": "true"})
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()


def rest_key_names(srv, sa_id):
    return sorted(i["name"] for i in list_all(srv, "%s/%s/api_keys"
                                              % (SAS, sa_id)))


def login(srv, key):
    """POST /api/v1/login with an API key, plain requests (no session, no
    cookies).  The Response."""
    return requests.post(srv.url + "/api/v1/login",
                         data={"grant_type": "zenml-api-key",
                               "password": key}, timeout=30)


def assert_logs_in_as(srv, key, sa_name):
    r = login(srv, key)
    assert r.status_code == 200, "key refused: %s %s" % (r.status_code,
                                                         r.text)
    tok = r.json()["access_token"]
    me = srv.current_user(tok)
    assert me.status_code == 200, me.text
    assert me.json()["name"] == sa_name
    assert me.json()["body"]["is_service_account"] is True
    return tok


def assert_refused(srv, key):
    r = login(srv, key)
    assert r.status_code == 401, "key still logs in: %s %s" % (
        r.status_code, r.text[:200])


def rfc(server_time):
    """The server's naive UTC ISO time as the tree shows it ('' if None)."""
    if server_time is None:
        return ""
    return server_time[:19].replace(" ", "T") + "Z"


def key_secret_part(key):
    """The hex secret inside a ZENKEY_ value."""
    blob = key[len("ZENKEY_"):]
    return json.loads(base64.b64decode(blob + "=" * (-len(blob) % 4)))["key"]


def assert_secret_absent(text, key, where):
    assert key not in text, "key value found in %s" % where
    assert key_secret_part(key) not in text, "key secret found in %s" % where


def read_new_key(m, sa, key):
    rel = "service-accounts/%s/keys/%s/key" % (sa, key)
    size = os.stat(m.join(rel)).st_size
    v = m.text(rel)
    assert size == len(v), "key: st_size %d, %d bytes read" % (size, len(v))
    assert v.startswith("ZENKEY_") and v.endswith("\n"), repr(v[:20])
    assert "\n" not in v[:-1]
    return v[:-1]


def log_mark(m):
    return len(m.log())


def admin_log_line(m, *needles, uid=0, pid=None, since=0):
    """The log line recording an admin action (logged after offset
    ``since``): has every needle and the caller's uid and pid."""
    pid = os.getpid() if pid is None else pid
    uid_re = re.compile(r"\buid %d\b" % uid)
    pid_re = re.compile(r"\bpid %d\b" % pid)
    for ln in m.log()[since:].splitlines():
        if uid_re.search(ln) and pid_re.search(ln) and \
                all(n in ln for n in needles):
            return ln
    pytest.fail("no log line with uid %d, pid %d and %r:\n%s"
                % (uid, pid, needles, m.log()))


def wait_for(fn, timeout, what, step=0.1):
    """Poll fn() until truthy; returns its value."""
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            pytest.fail("timed out after %.1f s waiting for %s" % (timeout,
                                                                  what))
        time.sleep(step)


def make_sa(srv, cleanup, name=None, keys=("default",), description=None):
    """Service account + keys over REST; returns (sa_json, {name: key})."""
    name = cleanup.sa(name or uniq())
    sa = srv.create_service_account(name, description=description)
    vals = {}
    for k in keys:
        vals[k] = srv.create_api_key(sa["id"], k)["body"]["key"]
    return sa, vals


# ------------------------------------------------- create, list, attributes


def test_mkdir_account_and_key_then_login(zenml_server, cleanup,
                                          admin_mount):
    srv = zenml_server
    m = admin_mount("meta_ttl=60")      # a write must show at once anyway
    name = cleanup.sa(uniq())
    before = os.listdir(m.join("service-accounts"))
    assert name not in before

    mark = log_mark(m)
    os.mkdir(m.join("service-accounts", name))
    sa = rest_sa(srv, name)
    assert sa is not None, "mkdir did not create the account"
    assert sa["body"]["active"] is True
    # Shown at once, in spite of meta_ttl=60.
    assert name in os.listdir(m.join("service-accounts"))
    assert attr(m, "service-accounts/%s/active" % name) == "1"
    assert attr(m, "service-accounts/%s/id" % name) == sa["id"]
    assert sorted(os.listdir(m.join("service-accounts", name))) == sorted(
        SA_ATTRS + ("info.json", "active", "keys"))
    assert os.listdir(m.join("service-accounts", name, "keys")) == []
    admin_log_line(m, name, since=mark)

    mark = log_mark(m)
    os.mkdir(m.join("service-accounts", name, "keys", "ci"))
    k = rest_key(srv, sa["id"], "ci")
    assert k is not None, "mkdir did not create the key"
    assert k["body"]["active"] is True
    assert os.listdir(m.join("service-accounts", name, "keys")) == ["ci"]
    kdir = m.join("service-accounts", name, "keys", "ci")
    assert sorted(os.listdir(kdir)) == sorted(
        KEY_ATTRS + ("info.json", "active", "rotate", "key"))
    st = os.stat(os.path.join(kdir, "key"))
    assert st.st_mode & 0o777 == 0o400
    admin_log_line(m, name, "ci", since=mark)

    key = read_new_key(m, name, "ci")
    assert read_new_key(m, name, "ci") == key     # stable within the window
    tok = assert_logs_in_as(srv, key, name)
    assert jwt_claims(tok)["sub"] == sa["id"]
    assert attr(m, "service-accounts/%s/keys/ci/id" % name) == k["id"]

    # The value is nowhere else.
    for rel in ("service-accounts/%s/info.json" % name,
                "service-accounts/%s/keys/ci/info.json" % name, "status"):
        assert_secret_absent(m.text(rel), key, rel)
    for a in KEY_ATTRS:
        assert_secret_absent(m.text("service-accounts/%s/keys/ci/%s"
                                    % (name, a)), key, a)
    assert_secret_absent(m.log(), key, "the daemon log")
    assert_secret_absent(open(os.path.join(m.workdir, "stdio.log"),
                              errors="replace").read(), key, "stdio")


def test_listings_equal_server(zenml_server, cleanup, admin_mount):
    srv = zenml_server
    # More than one page at the server's default page size (20).
    base = uniq("pg")
    for i in range(23):
        srv.create_service_account(cleanup.sa("%s-%02d" % (base, i)))
    sa, _ = make_sa(srv, cleanup, keys=["k%02d" % i for i in range(21)])
    m = admin_mount()
    got = sorted(os.listdir(m.join("service-accounts")))
    want = rest_sa_names(srv)
    assert got == want
    got_keys = sorted(os.listdir(m.join("service-accounts", sa["name"],
                                        "keys")))
    assert got_keys == rest_key_names(srv, sa["id"])
    assert len(got_keys) == 21
    # Every entry is a directory.
    for n in got[:3] + [sa["name"]]:
        assert os.path.isdir(m.join("service-accounts", n))
    assert os.path.isdir(m.join("service-accounts", sa["name"], "keys",
                                "k20"))
    assert not os.path.exists(m.join("service-accounts", uniq("none")))
    assert not os.path.exists(m.join("service-accounts", sa["name"], "keys",
                                     "nope"))


def test_account_attributes_equal_server(zenml_server, cleanup,
                                         admin_mount):
    srv = zenml_server
    sa, _ = make_sa(srv, cleanup, keys=(), description="built by tests")
    m = admin_mount()
    d = "service-accounts/%s/" % sa["name"]
    rs = rest_sa(srv, sa["id"])
    want = {
        "id": rs["id"],
        "full_name": rs["body"].get("full_name") or "",  # 0.85 on
        "description": rs["metadata"]["description"] or "",
        "created": rfc(rs["body"]["created"]),
        "updated": rfc(rs["body"]["updated"]),
    }
    assert want["description"] == "built by tests"
    for a in SA_ATTRS:
        assert attr(m, d + a) == want[a], a
    for a in ("created", "updated"):
        assert RFC3339_Z.match(attr(m, d + a)), attr(m, d + a)
    info = json.loads(m.text(d + "info.json"))
    assert m.text(d + "info.json").endswith("\n")
    assert set(SA_ATTRS) <= set(info), info
    assert set(info) - set(SA_ATTRS) <= {"name", "active"}, info
    for a in SA_ATTRS:
        if a == "full_name":
            # the server's value: null before 0.85 (the file is empty)
            assert info[a] == rs["body"].get("full_name"), a
        else:
            assert info[a] == want[a], a
    assert attr(m, d + "active") == "1"
    assert os.stat(m.join(d + "active")).st_mode & 0o777 == 0o600


def test_key_attributes_equal_server(zenml_server, cleanup, admin_mount):
    srv = zenml_server
    sa, keys = make_sa(srv, cleanup, keys=("a", "b"))
    srv.api_key_session(keys["a"])          # sets last_login of a
    srv.rotate_api_key(sa["id"], "b", retain_minutes=7)
    m = admin_mount()
    for kn in ("a", "b"):
        d = "service-accounts/%s/keys/%s/" % (sa["name"], kn)
        rk = rest_key(srv, sa["id"], kn)
        md = rk["metadata"]
        want = {
            "id": rk["id"],
            "description": md["description"] or "",
            "created": rfc(rk["body"]["created"]),
            "updated": rfc(rk["body"]["updated"]),
            "last_login": rfc(md["last_login"]),
            "last_rotated": rfc(md["last_rotated"]),
            "retain_period_minutes": str(md["retain_period_minutes"]),
        }
        for a in KEY_ATTRS:
            assert attr(m, d + a) == want[a], (kn, a)
        for a in ("created", "updated", "last_login", "last_rotated"):
            v = attr(m, d + a)
            assert v == "" or RFC3339_Z.match(v), (kn, a, v)
        info = json.loads(m.text(d + "info.json"))
        assert set(KEY_ATTRS) <= set(info), info
        assert set(info) - set(KEY_ATTRS) <= {"name", "active"}, info
        assert info["id"] == want["id"]
        assert info["retain_period_minutes"] == md["retain_period_minutes"]
        for a in ("created", "updated", "last_login", "last_rotated"):
            assert info[a] == (want[a] or None), (kn, a, info[a])
        assert attr(m, d + "active") == "1"
        # No key value outside the window of a create/rotate done here.
        assert os_error(lambda: m.read(d + "key")) == errno.ENOENT
        assert "key" not in os.listdir(m.join(d))
        assert_secret_absent(m.text(d + "info.json"), keys[kn], "info.json")
    assert attr(m, "service-accounts/%s/keys/a/last_login"
                % sa["name"]) != ""
    assert attr(m, "service-accounts/%s/keys/b/last_rotated"
                % sa["name"]) != ""
    assert attr(m, "service-accounts/%s/keys/b/retain_period_minutes"
                % sa["name"]) == "7"


def test_rest_changes_show_within_meta_ttl(zenml_server, cleanup, proxy,
                                           admin_mount):
    """Changes made over REST (an account and a key deactivated, a key
    and an account made, an account deleted) show once the daemon asks
    the server again, which it does within meta_ttl."""
    srv = zenml_server
    sa, _ = make_sa(srv, cleanup, keys=("default",))
    gone, _ = make_sa(srv, cleanup, keys=())
    m = admin_mount("meta_ttl=1", proxy.url)
    d = "service-accounts/%s/" % sa["name"]
    assert attr(m, d + "active") == "1"
    assert attr(m, d + "keys/default/active") == "1"
    assert os.listdir(m.join(d + "keys")) == ["default"]
    new_sa = cleanup.sa(uniq())
    assert new_sa not in os.listdir(m.join("service-accounts"))
    assert os.path.isdir(m.join("service-accounts", gone["name"]))

    srv.api("PUT", SAS + "/" + sa["id"],
            json={"active": False}).raise_for_status()
    srv.set_api_key_active(sa["id"], "default", False)
    srv.create_api_key(sa["id"], "second")
    srv.create_service_account(new_sa)
    srv.api("DELETE", SAS + "/" + gone["id"]).raise_for_status()
    t0 = time.monotonic()

    def shows(fn, what):
        until_asked_again(proxy, t0, 1, fn, what)

    shows(lambda: m.text(d + "active") == "0\n", "account active")
    shows(lambda: m.text(d + "keys/default/active") == "0\n", "key active")
    shows(lambda: sorted(os.listdir(m.join(d + "keys"))) ==
          ["default", "second"], "key listing")
    shows(lambda: new_sa in os.listdir(m.join("service-accounts")),
          "account listing")
    assert os.path.isdir(m.join("service-accounts", new_sa))
    shows(lambda: not os.path.exists(m.join("service-accounts",
                                            gone["name"])),
          "deleted account to vanish")
    assert gone["name"] not in os.listdir(m.join("service-accounts"))


# ---------------------------------------------------------------- rotation


def test_rotate_keeps_old_key_for_retain_period(zenml_server, cleanup,
                                                admin_mount):
    srv = zenml_server
    sa, keys = make_sa(srv, cleanup)
    orig = keys["default"]
    m = admin_mount("meta_ttl=60")
    d = "service-accounts/%s/keys/default/" % sa["name"]
    assert os_error(lambda: m.read(d + "key")) == errno.ENOENT
    assert os.stat(m.join(d + "rotate")).st_mode & 0o777 == 0o200
    assert os_error(lambda: m.read(d + "rotate")) in DENIED

    mark = log_mark(m)
    assert m.write(d + "rotate", "60\n") == 3
    admin_log_line(m, sa["name"], "default", since=mark)
    k1 = read_new_key(m, sa["name"], "default")
    assert k1 != orig
    assert_logs_in_as(srv, k1, sa["name"])
    assert_logs_in_as(srv, orig, sa["name"])    # within the retain period
    rk = rest_key(srv, sa["id"], "default")
    assert rk["metadata"]["retain_period_minutes"] == 60
    assert rk["metadata"]["last_rotated"]
    # Shown at once in spite of meta_ttl=60.
    assert attr(m, d + "retain_period_minutes") == "60"
    assert attr(m, d + "last_rotated") == rfc(rk["metadata"]["last_rotated"])
    assert "key" in os.listdir(m.join(d))

    assert m.write(d + "rotate", "0") == 1
    k2 = read_new_key(m, sa["name"], "default")
    assert k2 not in (k1, orig)
    assert_logs_in_as(srv, k2, sa["name"])
    assert_refused(srv, k1)                     # retain 0: at once
    assert_refused(srv, orig)
    assert attr(m, d + "retain_period_minutes") == "0"
    for text, where in ((m.log(), "log"), (m.text("status"), "status"),
                        (m.text(d + "info.json"), "info.json")):
        for k in (orig, k1, k2):
            assert_secret_absent(text, k, where)


def test_rotate_rejects_bad_values(zenml_server, cleanup, proxy,
                                   admin_mount):
    srv = zenml_server
    sa, keys = make_sa(srv, cleanup)
    m = admin_mount(url=proxy.url)
    d = "service-accounts/%s/keys/default/" % sa["name"]
    before = rest_key(srv, sa["id"], "default")
    rotate_path = "%s/%s/api_keys/%s/rotate" % (SAS, sa["id"], before["id"])
    for v in BAD_ROTATE:
        err = os_error(lambda: m.write(d + "rotate", v))
        assert err == errno.EINVAL, "rotate %r: %s" % (v, ename(err))
    assert proxy.count(rotate_path) == 0, "a bad value reached the server"
    after = rest_key(srv, sa["id"], "default")
    assert after["metadata"]["last_rotated"] is None
    assert after["metadata"]["retain_period_minutes"] == \
        before["metadata"]["retain_period_minutes"]
    assert after["body"]["updated"] == before["body"]["updated"]
    assert os_error(lambda: m.read(d + "key")) == errno.ENOENT
    assert_logs_in_as(srv, keys["default"], sa["name"])
    # A bad write leaves no trace that would make a later good one fail.
    assert m.write(d + "rotate", "0\n") == 2
    assert proxy.count(rotate_path) == 1
    assert_refused(srv, keys["default"])


# ------------------------------------------------------------------ active


def test_key_active_toggles_login_and_tokens(zenml_server, cleanup,
                                            admin_mount):
    srv = zenml_server
    sa, keys = make_sa(srv, cleanup, keys=("default", "other"))
    key, other = keys["default"], keys["other"]
    tok = assert_logs_in_as(srv, key, sa["name"])
    m = admin_mount("meta_ttl=60")
    d = "service-accounts/%s/keys/default/" % sa["name"]
    assert attr(m, d + "active") == "1"

    mark = log_mark(m)
    assert m.write(d + "active", "0\n") == 2
    assert attr(m, d + "active") == "0"         # at once
    assert rest_key(srv, sa["id"], "default")["body"]["active"] is False
    assert_refused(srv, key)
    assert srv.current_user(tok).status_code == 401
    assert_logs_in_as(srv, other, sa["name"])   # the other key is untouched
    admin_log_line(m, sa["name"], "default", since=mark)

    mark = log_mark(m)
    assert m.write(d + "active", "1\n") == 2
    assert attr(m, d + "active") == "1"
    assert rest_key(srv, sa["id"], "default")["body"]["active"] is True
    assert_logs_in_as(srv, key, sa["name"])
    admin_log_line(m, sa["name"], "default", since=mark)


def test_account_active_toggles_all_keys(zenml_server, cleanup, admin_mount):
    srv = zenml_server
    sa, keys = make_sa(srv, cleanup, keys=("a", "b"))
    toks = [assert_logs_in_as(srv, k, sa["name"]) for k in keys.values()]
    m = admin_mount("meta_ttl=60")
    d = "service-accounts/%s/" % sa["name"]

    mark = log_mark(m)
    assert m.write(d + "active", "0") == 1
    assert attr(m, d + "active") == "0"
    assert rest_sa(srv, sa["id"])["body"]["active"] is False
    for k in keys.values():
        assert_refused(srv, k)
    for t in toks:
        assert srv.current_user(t).status_code == 401
    # The keys themselves stay active.
    assert attr(m, d + "keys/a/active") == "1"
    admin_log_line(m, sa["name"], since=mark)

    assert m.write(d + "active", "1") == 1
    assert attr(m, d + "active") == "1"
    assert rest_sa(srv, sa["id"])["body"]["active"] is True
    for k in keys.values():
        assert_logs_in_as(srv, k, sa["name"])


def test_write_shows_in_every_file_of_the_account_at_once(zenml_server,
                                                          cleanup,
                                                          admin_mount):
    """The kernel keeps an account's files while its record is fresh
    (meta_ttl=60 here: every read below but the first comes from the
    kernel's cache); a write through the tree drops them, so the file
    written and its neighbours read the change at once."""
    srv = zenml_server
    sa, _ = make_sa(srv, cleanup)
    m = admin_mount("meta_ttl=60")
    d = "service-accounts/%s/" % sa["name"]
    for _ in range(2):
        updated = attr(m, d + "updated")
        assert json.loads(m.text(d + "info.json"))["updated"] == updated
        assert attr(m, d + "active") == "1"
    for value, active in (("0", False), ("1", True)):
        time.sleep(1.1)  # a new "updated" time (whole seconds)
        assert m.write(d + "active", value) == 1
        assert attr(m, d + "active") == value
        now = attr(m, d + "updated")
        assert now != updated
        assert json.loads(m.text(d + "info.json"))["updated"] == now
        assert rest_sa(srv, sa["id"])["body"]["active"] is active
        updated = now


def test_name_a_listing_lacks_is_gone_from_stat_at_once(zenml_server,
                                                        cleanup,
                                                        admin_mount):
    """An account looked up alone stays in the kernel's cache while its
    record is fresh; when a new listing lacks it (deleted elsewhere), the
    daemon drops that entry before ls gets the listing: ls and stat
    agree at once, not only meta_ttl later."""
    srv = zenml_server
    sa, _ = make_sa(srv, cleanup)
    ttl = 4
    m = admin_mount("meta_ttl=%d" % ttl)
    sadir = m.join("service-accounts")
    path = os.path.join(sadir, sa["name"])
    assert sa["name"] in os.listdir(sadir)
    time.sleep(ttl + 1.5)  # the listing has expired
    assert os.path.isdir(path)  # fetched alone: fresh for ttl s more
    srv.api("DELETE", SAS + "/" + sa["id"]).raise_for_status()
    assert sa["name"] not in os.listdir(sadir)
    assert not os.path.exists(path)
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(path, "id"))


def test_active_accepts_every_spelling(zenml_server, cleanup, admin_mount):
    srv = zenml_server
    sa, _ = make_sa(srv, cleanup)
    m = admin_mount()
    targets = {
        "service-accounts/%s/active" % sa["name"]:
            lambda: rest_sa(srv, sa["id"])["body"]["active"],
        "service-accounts/%s/keys/default/active" % sa["name"]:
            lambda: rest_key(srv, sa["id"], "default")["body"]["active"],
    }
    for rel, state in targets.items():
        for f, t in zip(ACCEPTED_FALSE, ACCEPTED_TRUE):
            m.write(rel, f)
            assert state() is False, "%s after %r" % (rel, f)
            assert attr(m, rel) == "0"
            m.write(rel, t)
            assert state() is True, "%s after %r" % (rel, t)
            assert attr(m, rel) == "1"


@pytest.mark.parametrize("initial", [True, False])
def test_active_rejects_bad_values(zenml_server, cleanup, proxy,
                                   admin_mount, initial):
    srv = zenml_server
    sa, keys = make_sa(srv, cleanup)
    if not initial:
        srv.set_api_key_active(sa["id"], "default", False)
        srv.api("PUT", SAS + "/" + sa["id"],
                json={"active": False}).raise_for_status()
    m = admin_mount(url=proxy.url)
    os.close(os.open(m.join("service-accounts/%s/keys/default/rotate"
                            % sa["name"]), os.O_WRONLY | os.O_TRUNC))
    sa_before = rest_sa(srv, sa["id"])
    key_before = rest_key(srv, sa["id"], "default")
    put_paths = (SAS + "/" + sa["id"],
                 "%s/%s/api_keys/%s" % (SAS, sa["id"], key_before["id"]))
    for rel in ("service-accounts/%s/active" % sa["name"],
                "service-accounts/%s/keys/default/active" % sa["name"]):
        for v in BAD_BOOLS:
            err = os_error(lambda: m.write(rel, v))
            assert err == errno.EINVAL, "%s <- %r: %s" % (rel, v, ename(err))
        # An empty write sends nothing (the kernel may not even pass it
        # on); it must not change anything either.
        os_error(lambda: m.write(rel, b""))
        # open(O_TRUNC) alone (": > file") is accepted and does nothing.
        os.close(os.open(m.join(rel), os.O_WRONLY | os.O_TRUNC))
        os.truncate(m.join(rel), 0)
        assert attr(m, rel) == ("1" if initial else "0")
    counts = proxy.counts
    for p in put_paths:
        assert counts.get(p, 0) == 0, "a bad value reached the server: %s" % p
    sa_after = rest_sa(srv, sa["id"])
    key_after = rest_key(srv, sa["id"], "default")
    assert sa_after["body"]["active"] is initial
    assert key_after["body"]["active"] is initial
    assert sa_after["body"]["updated"] == sa_before["body"]["updated"]
    assert key_after["body"]["updated"] == key_before["body"]["updated"]


# ------------------------------------------------------------- key window


def test_key_window_and_privacy(zenml_server, cleanup, admin_mount):
    srv = zenml_server
    sa, _ = make_sa(srv, cleanup, keys=())
    window = 4
    m = admin_mount("meta_ttl=1,key_window=%d,allow_other,tree_mode=0755"
                    % window)
    kdir = m.join("service-accounts", sa["name"], "keys", "w")
    t0 = time.monotonic()
    os.mkdir(kdir)
    key = read_new_key(m, sa["name"], "w")
    assert "key" in os.listdir(kdir)
    st = os.stat(os.path.join(kdir, "key"))
    assert st.st_mode & 0o777 == 0o400 and st.st_uid == os.getuid()
    # Another uid cannot read it, even with allow_other.
    r = nobody_op("read", os.path.join(kdir, "key"))
    assert r["errno"] in ("EACCES", "EPERM") and r["out"] == "", r
    # ... but can read the rest of the folder.
    r = nobody_op("read", os.path.join(kdir, "id"))
    assert r["errno"] is None, r
    assert r["out"].strip() == rest_key(srv, sa["id"], "w")["id"]
    assert time.monotonic() - t0 < window - 1.2, "too slow for key_window"
    assert read_new_key(m, sa["name"], "w") == key

    # Gone after the window: ENOENT and not listed.
    wait_for(lambda: os_error(lambda: m.read(
        "service-accounts/%s/keys/w/key" % sa["name"])) == errno.ENOENT,
        window + 2.5 - (time.monotonic() - t0), "key to disappear")
    # (The daemon counts whole seconds: allow one second less.)
    assert time.monotonic() - t0 >= window - 1.1, \
        "key gone before key_window"
    assert "key" not in os.listdir(kdir)
    assert not os.path.exists(os.path.join(kdir, "key"))
    # The key itself still works: only its copy in the tree is gone.
    assert_logs_in_as(srv, key, sa["name"])
    assert_secret_absent(m.log(), key, "log")
    assert_secret_absent(m.text("status"), key, "status")
    assert_secret_absent(m.text("service-accounts/%s/keys/w/info.json"
                                % sa["name"]), key, "info.json")

    # A rotate opens a new window for the new value.
    m.write("service-accounts/%s/keys/w/rotate" % sa["name"], "0")
    k2 = read_new_key(m, sa["name"], "w")
    assert k2 != key
    assert_logs_in_as(srv, k2, sa["name"])
    assert_secret_absent(m.log(), k2, "log")


# ------------------------------------------------------------ other users


def _other_uid_cases(m, sa, newsa):
    d = m.join("service-accounts", sa["name"])
    return (("write", d + "/active", "0\n"),
            ("write", d + "/keys/default/active", "0\n"),
            ("write", d + "/keys/default/rotate", "0\n"),
            ("mkdir", m.join("service-accounts", newsa), ""),
            ("mkdir", d + "/keys/new", ""),
            ("rmdir", d + "/keys/default", ""),
            ("rmdir", d, ""))


def _assert_unchanged(srv, sa, keys, newsa):
    assert rest_sa(srv, newsa) is None
    assert rest_sa(srv, sa["id"])["body"]["active"] is True
    k = rest_key(srv, sa["id"], "default")
    assert k["body"]["active"] is True
    assert k["metadata"]["last_rotated"] is None
    assert rest_key(srv, sa["id"], "new") is None
    assert_logs_in_as(srv, keys["default"], sa["name"])


def test_other_uid_is_refused_by_kernel(zenml_server, cleanup, admin_mount):
    """allow_other: files keep their modes, so uid 65534 cannot write the
    control files nor mkdir/rmdir."""
    srv = zenml_server
    sa, keys = make_sa(srv, cleanup)
    m = admin_mount("meta_ttl=1,allow_other")
    newsa = cleanup.sa(uniq())
    for op, path, data in _other_uid_cases(m, sa, newsa):
        r = nobody_op(op, path, data)
        assert r["errno"] in ("EACCES", "EPERM"), (op, path, r)
    _assert_unchanged(srv, sa, keys, newsa)


def test_other_uid_is_refused_by_daemon(zenml_server, cleanup, admin_mount):
    """With uid=65534 and the tree opened to all (tree_mode=0777) the
    kernel lets uid 65534 mkdir and rmdir in the admin tree, and write
    refresh (-o uid makes it the owner): the daemon itself must refuse,
    and log the uid and pid.  -o uid gives the token files, never the
    admin tree: it stays the mounting user's."""
    srv = zenml_server
    sa, keys = make_sa(srv, cleanup)
    m = admin_mount("meta_ttl=1,allow_other,uid=65534,gid=65534,"
                    "tree_mode=0777")
    d = m.join("service-accounts", sa["name"])
    assert os.stat(d + "/active").st_uid == os.getuid()
    assert os.stat(m.join("refresh")).st_uid == 65534
    assert os.stat(m.join("token")).st_uid == 65534
    newsa = cleanup.sa(uniq())
    cases = _other_uid_cases(m, sa, newsa) + \
        (("write", m.join("refresh"), "1\n"),)
    for op, path, data in cases:
        r = nobody_op(op, path, data)
        assert r["errno"] in ("EACCES", "EPERM"), (op, path, r)
        if op != "write" or path.endswith("/refresh"):
            # past the kernel's mode check: the daemon refused
            admin_log_line(m, uid=65534, pid=r["pid"])
    _assert_unchanged(srv, sa, keys, newsa)
    # The owner (root here) still may.
    m.write("service-accounts/%s/keys/default/active" % sa["name"], "0")
    assert rest_key(srv, sa["id"], "default")["body"]["active"] is False


# ------------------------------------------------------------------ rmdir


def test_rmdir_key_and_account(zenml_server, cleanup, admin_mount):
    srv = zenml_server
    sa, keys = make_sa(srv, cleanup, keys=("a", "b"))
    m = admin_mount("meta_ttl=60")
    d = m.join("service-accounts", sa["name"])
    assert sorted(os.listdir(d + "/keys")) == ["a", "b"]
    mark = log_mark(m)
    os.rmdir(d + "/keys/a")
    assert rest_key(srv, sa["id"], "a") is None
    assert os.listdir(d + "/keys") == ["b"]       # at once
    assert not os.path.exists(d + "/keys/a")
    assert_refused(srv, keys["a"])
    admin_log_line(m, sa["name"], "a", since=mark)

    # An account that still has keys is not deleted (POSIX: ENOTEMPTY),
    # and nothing is sent to delete it.
    err = os_error(lambda: os.rmdir(d))
    assert err == errno.ENOTEMPTY, ename(err)
    assert rest_sa(srv, sa["id"]) is not None
    assert rest_key(srv, sa["id"], "b") is not None
    assert_logs_in_as(srv, keys["b"], sa["name"])
    os.rmdir(d + "/keys/b")
    assert_refused(srv, keys["b"])

    mark = log_mark(m)
    os.rmdir(d)
    assert rest_sa(srv, sa["id"]) is None
    assert sa["name"] not in os.listdir(m.join("service-accounts"))
    assert not os.path.exists(d)
    admin_log_line(m, sa["name"], since=mark)

    assert os_error(lambda: os.rmdir(d)) == errno.ENOENT
    assert os_error(lambda: os.rmdir(m.join("service-accounts", uniq(),
                                            "keys", "x"))) == errno.ENOENT


def test_rmdir_refused_by_server(zenml_server, cleanup, admin_mount):
    """An account that owns resources cannot be deleted: EPERM, and the
    server's message in the log."""
    if ZENML_VERSION < (0, 80, 0):
        pytest.skip("before ZenML 0.80 a tag is owned by no account: the "
                    "server deletes the account")
    srv = zenml_server
    sa, keys = make_sa(srv, cleanup)
    tok = srv.api_key_session(keys["default"])
    tag = "zfs-tag-" + secrets.token_hex(4)
    r = srv.api("POST", "/api/v1/tags", json={"name": tag}, token=tok)
    assert r.status_code == 200, r.text
    cleanup.tags.append(r.json()["id"])
    # No keys left (an account with keys is ENOTEMPTY before the server
    # is asked): the server's own refusal is what remains.
    r = srv.api("DELETE", "%s/%s/api_keys/default" % (SAS, sa["id"]))
    assert r.status_code == 200, r.text
    m = admin_mount()
    m.expect_errors = True
    d = m.join("service-accounts", sa["name"])
    err = os_error(lambda: os.rmdir(d))
    assert err == errno.EPERM, ename(err)
    assert rest_sa(srv, sa["id"]) is not None
    assert os.path.isdir(d)
    assert "cannot be deleted" in m.log() or "owns" in m.log(), m.log()


def test_rmdir_missing_entries(zenml_server, cleanup, admin_mount):
    srv = zenml_server
    sa, _ = make_sa(srv, cleanup)
    m = admin_mount()
    names_before = rest_sa_names(srv)
    for rel in ("service-accounts/" + uniq(),
                "service-accounts/%s/keys/nope" % sa["name"],
                "service-accounts/%s/keys/nope/" % sa["name"]):
        err = os_error(lambda: os.rmdir(m.join(rel)))
        assert err == errno.ENOENT, "%s: %s" % (rel, ename(err))
    missing = uniq()
    err = os_error(lambda: os.mkdir(m.join("service-accounts", missing,
                                           "keys", "k")))
    assert err == errno.ENOENT, ename(err)
    assert rest_sa_names(srv) == names_before
    assert rest_key_names(srv, sa["id"]) == ["default"]


# ---------------------------------------------------------------- bad names


def test_mkdir_existing_is_eexist(zenml_server, cleanup, admin_mount):
    srv = zenml_server
    sa, keys = make_sa(srv, cleanup)
    m = admin_mount("meta_ttl=60")
    d = m.join("service-accounts", sa["name"])
    assert os_error(lambda: os.mkdir(d)) == errno.EEXIST
    assert os_error(lambda: os.mkdir(d + "/keys/default")) == errno.EEXIST
    # Made elsewhere after the mount listed (meta_ttl=60): the server's
    # 409 is EEXIST too, whatever the cache says, with its message logged.
    # (A change through the tree refreshes the whole account cache, so only
    # the first of these two is sure to reach the server.)
    os.listdir(m.join("service-accounts"))
    os.listdir(d + "/keys")
    late = cleanup.sa(uniq())
    srv.create_service_account(late)
    srv.create_api_key(sa["id"], "late")
    m.expect_errors = True      # the daemon logs the server's 409
    err = os_error(lambda: os.mkdir(d + "/keys/late"))
    assert err == errno.EEXIST, ename(err)
    assert "existing API key" in m.log(), m.log()
    err = os_error(lambda: os.mkdir(m.join("service-accounts", late)))
    assert err == errno.EEXIST, ename(err)
    # Nothing changed on the server: the key kept its value.
    assert_logs_in_as(srv, keys["default"], sa["name"])
    assert rest_key_names(srv, sa["id"]) == ["default", "late"]
    assert os_error(lambda: m.read("service-accounts/%s/keys/late/key"
                                   % sa["name"])) == errno.ENOENT


def test_unusual_but_valid_names(zenml_server, cleanup, admin_mount):
    """Names the server takes are created exactly as written."""
    srv = zenml_server
    m = admin_mount()
    tag = secrets.token_hex(3)
    for base in ("a b", "\u00e9-\u00fc", "ci.bot", "...", ".h", "x:y=z"):
        name = cleanup.sa(base + tag)
        os.mkdir(m.join("service-accounts", name))
        sa = rest_sa(srv, name)
        assert sa is not None and sa["name"] == name, repr(name)
        assert name in os.listdir(m.join("service-accounts"))
        assert attr(m, "service-accounts/%s/id" % name) == sa["id"]
        os.mkdir(m.join("service-accounts", name, "keys", base))
        assert rest_key(srv, sa["id"], base) is not None, repr(base)
        assert os.listdir(m.join("service-accounts", name, "keys")) == [base]
        assert_logs_in_as(srv, read_new_key(m, name, base), name)
        os.rmdir(m.join("service-accounts", name, "keys", base))
        assert rest_key(srv, sa["id"], base) is None
        os.rmdir(m.join("service-accounts", name))
        assert rest_sa(srv, name) is None


def test_key_value_not_shown_for_a_recreated_key(zenml_server, cleanup,
                                                 admin_mount):
    """A key deleted and made again elsewhere (same name, new id) does not
    inherit the value the tree showed for the old one."""
    srv = zenml_server
    sa, _ = make_sa(srv, cleanup, keys=())
    m = admin_mount("meta_ttl=1")
    os.mkdir(m.join("service-accounts", sa["name"], "keys", "re"))
    old = read_new_key(m, sa["name"], "re")
    old_id = rest_key(srv, sa["id"], "re")["id"]
    srv.api("DELETE", "%s/%s/api_keys/%s" % (SAS, sa["id"], old_id)
            ).raise_for_status()
    new = srv.create_api_key(sa["id"], "re")
    assert new["id"] != old_id
    rel = "service-accounts/%s/keys/re/" % sa["name"]
    wait_for(lambda: attr(m, rel + "id") == new["id"], 3, "the new key id")
    assert_refused(srv, old)
    try:
        shown = m.text(rel + "key")
    except OSError as e:
        assert e.errno == errno.ENOENT, ename(e.errno)
    else:
        pytest.fail("key shows a value for the new key %s that the tree "
                    "never created: %s (the deleted key's value: %s)"
                    % (new["id"], shown[:12] + "...",
                       shown.strip() == old))


def _bad_names():
    return [("x" * 256, (errno.ENAMETOOLONG, errno.EINVAL)),
            ("y" * 300, (errno.ENAMETOOLONG, errno.EINVAL)),
            (" lead", (errno.EINVAL,)),
            ("trail ", (errno.EINVAL,)),
            (" both ", (errno.EINVAL,)),
            (".", (errno.EEXIST, errno.EINVAL, errno.EPERM)),
            ("..", (errno.EEXIST, errno.EINVAL, errno.EPERM,
                    errno.ENOTEMPTY))]


def test_mkdir_rejects_bad_account_names(zenml_server, cleanup,
                                         admin_mount):
    srv = zenml_server
    m = admin_mount()
    before = rest_sa_names(srv)
    for name, allowed in _bad_names():
        cleanup.sa(name)
        err = os_error(lambda: os.mkdir(m.join("service-accounts", name)))
        assert err in allowed, "%r: %s" % (name[:20], ename(err))
    assert rest_sa_names(srv) == before
    assert sorted(os.listdir(m.join("service-accounts"))) == before


def test_mkdir_rejects_bad_key_names(zenml_server, cleanup, admin_mount):
    srv = zenml_server
    sa, _ = make_sa(srv, cleanup)
    m = admin_mount()
    kd = m.join("service-accounts", sa["name"], "keys")
    for name, allowed in _bad_names():
        err = os_error(lambda: os.mkdir(os.path.join(kd, name)))
        assert err in allowed, "%r: %s" % (name[:20], ename(err))
    assert rest_key_names(srv, sa["id"]) == ["default"]
    assert os.listdir(kd) == ["default"]


def test_longest_name_is_accepted(zenml_server, cleanup, admin_mount):
    """255 bytes: the most both the server and a path component take."""
    srv = zenml_server
    m = admin_mount()
    name = cleanup.sa("z" * 247 + secrets.token_hex(4))
    assert len(name) == 255
    os.mkdir(m.join("service-accounts", name))
    sa = rest_sa(srv, name)
    assert sa is not None
    assert name in os.listdir(m.join("service-accounts"))
    kname = "k" * 255
    os.mkdir(m.join("service-accounts", name, "keys", kname))
    assert rest_key(srv, sa["id"], kname) is not None
    key = read_new_key(m, name, kname)
    assert_logs_in_as(srv, key, name)


def test_attribute_files_refuse_writes(zenml_server, cleanup, admin_mount):
    srv = zenml_server
    sa, keys = make_sa(srv, cleanup, description="keep")
    m = admin_mount("tree_mode=0755")
    d = "service-accounts/%s/" % sa["name"]
    rels = [d + a for a in SA_ATTRS + ("info.json",)] + \
        [d + "keys/default/" + a for a in KEY_ATTRS + ("info.json",)]
    before = {r: m.text(r) for r in rels}
    for rel in rels:
        err = os_error(lambda: m.write(rel, "x\n"))
        assert err in DENIED, "%s: %s" % (rel, ename(err))
        mode = os.stat(m.join(rel)).st_mode & 0o777
        assert mode == 0o444, "%s mode %o" % (rel, mode)
    # The key file cannot be written either (not even by its owner).
    m.write(d + "keys/default/rotate", "5")
    err = os_error(lambda: m.write(d + "keys/default/key", "ZENKEY_x\n"))
    assert err in DENIED, ename(err)
    for rel in rels:
        if not rel.endswith(("updated", "last_rotated", "info.json",
                             "retain_period_minutes")):
            assert m.text(rel) == before[rel], rel
    assert rest_sa(srv, sa["id"])["metadata"]["description"] == "keep"


# --------------------------------------------------- the daemon's own key


def _sa_can_rotate_own_keys(srv, cleanup):
    """Does this server let a service account rotate its own keys?  Tried
    on a throwaway account."""
    sa, keys = make_sa(srv, cleanup, keys=("probe", "victim"))
    tok = srv.api_key_session(keys["probe"])
    r = srv.api("PUT", "%s/%s/api_keys/victim/rotate" % (SAS, sa["id"]),
                json={"retain_period_minutes": 0}, token=tok)
    return r.status_code == 200, r


def test_own_key_rotate_through_own_tree(zenml_server, cleanup, mount):
    """A mount authenticated with a key rotates that key through its own
    tree (retain 0): it switches to the new key and keeps serving valid
    tokens, new ones included.  Needs a server that lets a service
    account rotate its own key."""
    srv = zenml_server
    allowed, probe = _sa_can_rotate_own_keys(srv, cleanup)
    if not allowed:
        pytest.skip("the server forbids a service account to rotate its "
                    "own key: %s %s" % (probe.status_code, probe.text))
    sa, keys = make_sa(srv, cleanup)
    old = keys["default"]
    m = mount(old, "meta_ttl=1,token_lifetime=600")
    m.write("service-accounts/%s/keys/default/rotate" % sa["name"], "0\n")
    new = read_new_key(m, sa["name"], "default")
    assert_refused(srv, old)
    assert_logs_in_as(srv, new, sa["name"])
    m.write("refresh", "1")
    tok = m.read("token").decode()
    assert srv.current_user(tok).status_code == 200
    assert srv.current_user(tok).json()["name"] == sa["name"]
    assert m.status()["state"] == "ok"
    assert_secret_absent(m.log(), new, "log")
    assert_secret_absent(m.text("status"), new, "status")


def test_own_key_rotate_refused_by_server(zenml_server, cleanup, mount):
    """Where the server forbids it (OSS without RBAC: only admins manage
    keys), the rotate fails with EPERM, the server's message is logged,
    nothing changes and the mount keeps serving tokens."""
    srv = zenml_server
    allowed, _ = _sa_can_rotate_own_keys(srv, cleanup)
    if allowed:
        pytest.skip("this server lets a service account rotate its keys")
    sa, keys = make_sa(srv, cleanup)
    m = mount(keys["default"], "meta_ttl=1,token_lifetime=600")
    m.expect_errors = True
    d = "service-accounts/%s/keys/default/" % sa["name"]
    tok = m.read("token").decode()
    err = os_error(lambda: m.write(d + "rotate", "0\n"))
    assert err == errno.EPERM, ename(err)
    assert "Only admin users" in m.log(), m.log()
    err = os_error(lambda: m.write(d + "active", "0\n"))
    assert err == errno.EPERM, ename(err)
    err = os_error(lambda: os.mkdir(m.join(d[:-len("default/")] + "more")))
    assert err == errno.EPERM, ename(err)
    k = rest_key(srv, sa["id"], "default")
    assert k["metadata"]["last_rotated"] is None and k["body"]["active"]
    assert rest_key(srv, sa["id"], "more") is None
    assert os_error(lambda: m.read(d + "key")) == errno.ENOENT
    assert_logs_in_as(srv, keys["default"], sa["name"])
    assert m.read("token").decode() == tok
    m.write("refresh", "1")
    tok2 = m.read("token").decode()
    assert srv.current_user(tok2).json()["name"] == sa["name"]
    assert m.status()["state"] == "ok"
    # It can still read its own account.
    assert attr(m, "service-accounts/%s/id" % sa["name"]) == sa["id"]


@pytest.mark.parametrize("how", ["deactivate", "delete",
                                 "deactivate-account", "delete-account"])
def test_own_key_revoked_through_tree(zenml_server, cleanup, mount,
                                      admin_mount, how):
    """The daemon's key is deactivated or deleted (through an admin's
    tree): token reads fail with EKEYREVOKED and status names the key."""
    srv = zenml_server
    sa, keys = make_sa(srv, cleanup)
    kid = rest_key(srv, sa["id"], "default")["id"]
    m = mount(keys["default"], "meta_ttl=1,token_lifetime=600,"
                               "check_interval=1")
    m.expect_errors = True
    tok = m.read("token")
    assert srv.current_user(tok.decode()).status_code == 200
    adm = admin_mount()
    d = "service-accounts/%s/keys/default" % sa["name"]
    if how == "deactivate":
        adm.write(d + "/active", "0")
    elif how == "delete":
        os.rmdir(adm.join(d))
    elif how == "deactivate-account":
        adm.write("service-accounts/%s/active" % sa["name"], "0")
    else:
        # The account still has the key: not deleted, ENOTEMPTY; its key
        # first, then the account.
        acct = adm.join("service-accounts", sa["name"])
        assert os_error(lambda: os.rmdir(acct)) == errno.ENOTEMPTY
        assert srv.current_user(tok.decode()).status_code == 200
        os.rmdir(adm.join(d))
        os.rmdir(acct)
    # The server itself refuses the minted token when its key goes only
    # from 0.96.3 (TOKENS_BOUND); an account's end, on every version.
    assert srv.current_user(tok.decode()).status_code == \
        (401 if TOKENS_BOUND or how.endswith("account") else 200)

    def failing():
        try:
            m.read("token")
            return None
        except OSError as e:
            return e.errno
    err = wait_for(failing, 8, "token reads to fail")
    assert err == errno.EKEYREVOKED, ename(err)
    time.sleep(1.5)
    assert os_error(lambda: m.read("token")) == errno.EKEYREVOKED
    assert os_error(lambda: m.read("token.json")) == errno.EKEYREVOKED
    st = m.status()
    assert st["state"] == "unauthenticated", st
    # Which key (or, for the account, which account) is named.
    names = ["default", kid]
    if how.endswith("account"):
        names += [sa["name"], sa["id"]]
    assert any(n in st["last_error"] for n in names), st
    assert_secret_absent(m.text("status"), keys["default"], "status")
    assert_secret_absent(m.log(), keys["default"], "log")


def test_own_key_rotate_through_own_tree_with_rbac(zenml_server, cleanup,
                                                   proxy, mount):
    """The daemon's own key rotated through its own tree, on a server whose
    RBAC lets the account rotate its key (the proxy stands in for that
    grant by sending the rotate with the admin's token; OSS forbids it).
    Retain 0: the old key dies at once, yet the daemon switched to the new
    key by itself and keeps logging in and minting valid tokens."""
    srv = zenml_server
    sa, keys = make_sa(srv, cleanup)
    old = keys["default"]
    proxy.auth_override[("PUT", "/api/v1/service_accounts/%s/api_keys"
                         % sa["id"])] = srv.admin_token()
    m = mount(old, "meta_ttl=1,token_lifetime=600", url=proxy.url)
    m.write("service-accounts/%s/keys/default/rotate" % sa["name"], "0\n")
    new = read_new_key(m, sa["name"], "default")
    assert new != old
    assert_refused(srv, old)
    assert_logs_in_as(srv, new, sa["name"])
    # The daemon's session from the old key may die any time now: a fresh
    # token must come from a login with the new key.
    before = m.read("token").decode()
    m.write("refresh", "1")
    tok = m.read("token").decode()
    assert tok != before
    r = srv.current_user(tok)
    assert r.status_code == 200 and r.json()["name"] == sa["name"]
    assert m.status()["state"] == "ok"
    assert "now uses the rotated key" in m.log()
    assert_secret_absent(m.log(), new, "log")
    assert_secret_absent(m.text("status"), new, "status")
