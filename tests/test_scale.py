"""Issue "Scale: cost grows with the work asked" (docs/design.md, Scale).

Against 2,000 service accounts made once for the module (concurrently, over
REST) on a server of the module's own (stopping it and removing its
directory deletes them at the end: 2,000 DELETEs would take this server
about 90 s), every test mounts through the counting proxy; the requests the daemon sent
are asserted, by method and path, where a goal names them (docs/design.md,
Scale), elsewhere what is read:

  - a walk (ls -l, cat */id) within meta_ttl is one list request; past
    meta_ttl a lookup is one GET of that object alone, never a list;
  - an admin write on a known object is one request, and what it changed
    reads back at once without another; a key's write under an account
    whose record expired needs no list and no GET of the account;
  - changes made elsewhere show within meta_ttl;
  - an idle mount sends only its refreshes, a read one sends checks, and
    a key deactivated elsewhere fails reads with EKEYREVOKED within
    check_interval and a margin;
  - the daemon's memory (/proc/PID/smaps_rollup) stays flat over 2,000
    refreshes and repeated listings (the inode table with it: every entry
    looked up is a new inode until the kernel forgets it).  The table and
    the listing's index have C unit tests (tests/unit/test_inode.c:
    itab_count back to its base after lookups and forgets;
    tests/unit/test_api.c: zlist_find over 10,000 records).
"""

import concurrent.futures
import errno
import os
import secrets
import subprocess
import threading
import time

import pytest
import requests

from conftest import SANITIZED, os_error, running_server, until_asked_again
from proxy import FaultProxy

N = 2000
SAS = "/api/v1/service_accounts"
ADMIN_ENV = {"ZENML_STORE_USERNAME": "default", "ZENML_STORE_PASSWORD": ""}
WORKERS = 4             # more only slow this server down (SQLite)
KIB = 1024
MIB = 1024 * 1024


# ------------------------------------------------------------------ helpers


def list_all(srv):
    """Every service account on the server (hydrated), by name."""
    items, page = [], 1
    while True:
        r = srv.api("GET", SAS, params={"page": page, "size": 10000,
                                        "hydrate": "true"}, timeout=120)
        assert r.status_code == 200, r.text
        j = r.json()
        items += j["items"]
        if page >= j["total_pages"]:
            return {i["name"]: i for i in items}
        page += 1


def _pool(fn, args):
    """fn over args in a thread pool, each thread with its own keep-alive
    requests.Session (bearer token only: no cookie is ever set)."""
    local = threading.local()

    def call(a):
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
        return fn(s, a)

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as ex:
        return list(ex.map(call, args))


def anon(pid):
    """Anonymous memory of pid in bytes (smaps_rollup)."""
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * KIB
    raise AssertionError("no Anonymous line for pid %d" % pid)


def vmrss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KIB
    raise AssertionError("no VmRSS for pid %d" % pid)


def sh(cmd, cwd):
    """Run a shell command as a user would; its stdout."""
    r = subprocess.run(["sh", "-c", cmd], cwd=cwd, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, "%s: %s" % (cmd, r.stderr[-2000:])
    return r.stdout


def expire(ttl):
    """Sleep until whatever m cached is older than ttl."""
    time.sleep(ttl + 0.3)


def at(dfd, rel, data=None):
    """Read (or write data to) rel under the directory open as dfd, as a
    shell that stayed in that directory would: the kernel does not look
    up the directory's own path again."""
    fd = os.open(rel, os.O_WRONLY if data is not None else os.O_RDONLY,
                 dir_fd=dfd)
    try:
        if data is not None:
            os.write(fd, data.encode())
            return None
        return os.read(fd, 4096).decode()
    finally:
        os.close(fd)


def until(fn, timeout, what, step=0.1):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            pytest.fail("timed out after %.1f s waiting for %s"
                        % (timeout, what))
        time.sleep(step)


# ----------------------------------------------------------------- fixtures


class Accounts:
    """The module's accounts: names, {name: id}, and a target account
    (with one API key "k") for the writes."""

    def __init__(self, srv):
        self.srv = srv
        self.tag = secrets.token_hex(3)
        self.names = ["scale-%s-%04d" % (self.tag, i) for i in range(N)]
        self.ids = {}
        self.extra = []         # names made by the tests

    def create(self):
        url = self.srv.url + SAS
        hdr = {"Authorization": "Bearer " + self.srv.admin_token()}

        def one(s, name):
            for _ in range(5):
                try:
                    r = s.post(url, json={"name": name, "active": True},
                               headers=hdr, timeout=60)
                except requests.RequestException:
                    time.sleep(0.5)
                    continue
                if r.status_code == 200:
                    return name, r.json()["id"]
                time.sleep(0.5)
            raise RuntimeError("cannot create %s: %s" % (name, r.text))

        t = time.monotonic()
        self.ids = dict(_pool(one, self.names))
        self.create_s = time.monotonic() - t
        self.target = self.names[N // 2]
        self.target_id = self.ids[self.target]
        k = self.srv.create_api_key(self.target_id, "k")
        self.key_id = k["id"]

    def new_name(self):
        name = "scale-%s-new-%s" % (self.tag, secrets.token_hex(3))
        self.extra.append(name)
        return name


@pytest.fixture(scope="module")
def scale_server():
    """A ZenML server for this module alone: the N accounts go with it."""
    with running_server(prefix="zenmlfs-scale-") as srv:
        yield srv


@pytest.fixture(scope="module")
def accounts(scale_server):
    """N service accounts made concurrently over REST on scale_server."""
    a = Accounts(scale_server)
    a.create()
    yield a


@pytest.fixture
def sproxy(scale_server):
    """The counting proxy in front of scale_server."""
    p = FaultProxy("127.0.0.1", scale_server.port).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def proxy2(zenml_server):
    """A second counting proxy in front of zenml_server."""
    p = FaultProxy("127.0.0.1", zenml_server.port).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def admin(mount):
    """Factory: a mount logged in as the server's admin (password login,
    no key), through url."""
    def factory(url, opts=""):
        return mount(None, opts, url=url, env_extra=dict(ADMIN_ENV))
    return factory


# ---------------------------------------------------------------- walks


def test_walk_is_one_list_request(scale_server, accounts, sproxy, admin):
    """ls -l and cat */id over 2,000 accounts: one GET of the list each,
    nothing else, and what they show is what the server has."""
    m = admin(sproxy.url)        # default meta_ttl (5 s)
    sadir = m.join("service-accounts")
    server = list_all(scale_server)
    assert set(accounts.names) <= set(server)

    sproxy.reset_counts()
    out = sh("ls -l", sadir).splitlines()
    assert sproxy.method_counts == {("GET", SAS): 1}
    assert out[0].startswith("total ")
    assert sorted(ln.split()[-1] for ln in out[1:]) == sorted(server)
    assert all(ln.startswith("d") for ln in out[1:])

    expire(5)
    sproxy.reset_counts()
    ids = sh("cat */id", sadir).split()
    assert sproxy.method_counts == {("GET", SAS): 1}
    assert sorted(ids) == sorted(i["id"] for i in server.values())


def test_lookup_past_meta_ttl_is_one_get_never_a_list(scale_server,
                                                    accounts, sproxy, admin):
    """Once the listing is older than meta_ttl, a lookup of one of its
    names (a walk that outlasts it, a reader moving between names) is one
    GET of that object alone, never the list again, and reads what the
    server has now."""
    m = admin(sproxy.url, "meta_ttl=1")
    sadir = m.join("service-accounts")
    sproxy.reset_counts()
    names = os.listdir(sadir)
    assert set(accounts.names) <= set(names)
    assert sproxy.method_counts == {("GET", SAS): 1}
    expire(1)
    sample = accounts.names[:: N // 20]
    sproxy.reset_counts()
    for n in sample:
        assert os.lstat(os.path.join(sadir, n)).st_mode & 0o040000
    assert sproxy.method_counts == {("GET", "%s/%s" % (SAS, n)): 1
                                    for n in sample}
    for n in sample:
        assert m.text("service-accounts/%s/id" % n) == \
            accounts.ids[n] + "\n"


# --------------------------------------------------------------- writes


def test_admin_writes_are_one_request_each(scale_server, accounts, sproxy,
                                           admin):
    """With the account and its keys known (listed), echo 0 > active,
    mkdir and rmdir send one request each (rmdir of an account: two, its
    keys are asked afresh); what they changed reads back at once with no
    request (freshness after writes through the tree)."""
    srv = scale_server
    m = admin(sproxy.url)
    sadir = m.join("service-accounts")
    t, tid, kid = accounts.target, accounts.target_id, accounts.key_id
    key_url = "%s/%s/api_keys/%s" % (SAS, tid, kid)
    assert accounts.target in os.listdir(sadir)
    assert os.listdir(m.join("service-accounts", t, "keys")) == ["k"]

    def one(fn, expected):
        sproxy.reset_counts()
        r = fn()
        assert sproxy.method_counts == expected
        return r

    try:
        one(lambda: m.write("service-accounts/%s/keys/k/active" % t, "0\n"),
            {("PUT", key_url): 1})
        assert srv.api("GET", key_url).json()["body"]["active"] is False
        assert one(lambda: m.text("service-accounts/%s/keys/k/active" % t),
                   {}) == "0\n"

        one(lambda: m.write("service-accounts/%s/active" % t, "0\n"),
            {("PUT", "%s/%s" % (SAS, tid)): 1})
        assert srv.api("GET", SAS + "/" + tid).json()["body"]["active"] \
            is False
        assert one(lambda: m.text("service-accounts/%s/active" % t),
                   {}) == "0\n"

        name = accounts.new_name()
        one(lambda: os.mkdir(os.path.join(sadir, name)),
            {("POST", SAS): 1})
        assert srv.api("GET", SAS + "/" + name).status_code == 200
        assert one(lambda: name in os.listdir(sadir), {})
        new_id = one(lambda: m.text("service-accounts/%s/id" % name),
                     {}).strip()

        one(lambda: os.mkdir(m.join("service-accounts", t, "keys", "k2")),
            {("POST", "%s/%s/api_keys" % (SAS, tid)): 1})
        assert one(lambda: sorted(os.listdir(
            m.join("service-accounts", t, "keys"))), {}) == ["k", "k2"]
        assert one(lambda: m.text("service-accounts/%s/keys/k2/key" % t),
                   {}).startswith("ZENKEY_")
        k2 = srv.api("GET", "%s/%s/api_keys/k2" % (SAS, tid)).json()["id"]
        one(lambda: os.rmdir(m.join("service-accounts", t, "keys", "k2")),
            {("DELETE", "%s/%s/api_keys/%s" % (SAS, tid, k2)): 1})
        assert one(lambda: os.listdir(m.join("service-accounts", t,
                                             "keys")), {}) == ["k"]

        one(lambda: os.rmdir(os.path.join(sadir, name)),
            {("GET", "%s/%s/api_keys" % (SAS, new_id)): 1,
             ("DELETE", "%s/%s" % (SAS, new_id)): 1})
        assert srv.api("GET", SAS + "/" + name).status_code == 404
        assert one(lambda: name not in os.listdir(sadir), {})
    finally:
        srv.api("PUT", key_url, json={"active": True})
        srv.api("PUT", SAS + "/" + tid, json={"active": True})


def _account_with_key(srv, prefix, description=None):
    name = "%s-%s" % (prefix, secrets.token_hex(4))
    sa = srv.create_service_account(name, description=description)
    k = srv.create_api_key(sa["id"], "k")
    return name, sa["id"], k["id"]


def _delete_account(srv, sid):
    for k in srv.api("GET", "%s/%s/api_keys" % (SAS, sid)).json().get(
            "items", []):
        srv.api("DELETE", "%s/%s/api_keys/%s" % (SAS, sid, k["id"]))
    srv.api("DELETE", "%s/%s" % (SAS, sid))


def test_expired_key_write_needs_no_list_and_no_account_get(
        zenml_server, proxy2, admin):
    """A key used before, its account's record expired since: from a
    process that stayed in the account's keys/ (a shell cd'd there: the
    kernel does not look the account up again), echo 0 > k/active finds
    the account's UUID in the identity map: one GET of the key and the
    PUT, no list and no GET of the account (docs/design.md, Scale).  The
    account's own files still read what the server has."""
    srv = zenml_server
    name, sid, kid = _account_with_key(srv, "viakey", description="d-42")
    m = admin(proxy2.url, "meta_ttl=1")
    keys = os.open(m.join("service-accounts", name, "keys"), os.O_RDONLY)
    key = "%s/%s/api_keys/k" % (SAS, sid)
    try:
        assert at(keys, "k/active") == "1\n"
        expire(1)
        proxy2.reset_counts()
        at(keys, "k/active", "0\n")
        assert proxy2.method_counts == {
            ("GET", key): 1,
            ("PUT", "%s/%s/api_keys/%s" % (SAS, sid, kid)): 1}
        assert srv.api("GET", key).json()["body"]["active"] is False

        expire(1)
        assert m.text("service-accounts/%s/active" % name) == "1\n"
        assert m.text("service-accounts/%s/id" % name) == sid + "\n"
        assert m.text("service-accounts/%s/description" % name) == \
            "d-42\n"
    finally:
        os.close(keys)
        _delete_account(srv, sid)


def test_child_lookup_when_the_server_fails(zenml_server, proxy2, admin):
    """A key looked up under an account whose record expired: a server
    that answers an error status, or does not answer, fails the read (not
    ENOENT: the key is not said to be gone); once it is back, all reads
    work."""
    srv = zenml_server
    name, sid, kid = _account_with_key(srv, "fails")
    m = admin(proxy2.url, "meta_ttl=1")
    keys = os.open(m.join("service-accounts", name, "keys"), os.O_RDONLY)
    key = "%s/%s/api_keys/k" % (SAS, sid)
    try:
        assert at(keys, "k/id") == kid + "\n"
        for fault in ("status", "refuse"):
            expire(1)
            if fault == "status":
                proxy2.add_fault(key, "status", status=500)
            else:
                proxy2.add_fault(key, "refuse")
            err = os_error(lambda: at(keys, "k/id"))
            assert err is not None and err != errno.ENOENT, (fault, err)
            proxy2.clear_faults()
            assert at(keys, "k/id") == kid + "\n"
        assert m.text("service-accounts/%s/id" % name) == sid + "\n"
        assert m.text("service-accounts/%s/keys/k/active" % name) == "1\n"
    finally:
        os.close(keys)
        proxy2.clear_faults()
        _delete_account(srv, sid)


def test_identity_must_still_be_the_same(zenml_server, proxy2, admin):
    """The identity map gives an account's UUID without asking only while
    it is right: an account deleted and made again under the same name,
    or renamed, while its record was expired, reads the server's present
    state, also from a shell that stayed in its keys/ (the key's 404
    under the old UUID looks the account up again)."""
    srv = zenml_server
    name, sid, _ = _account_with_key(srv, "again")
    m = admin(proxy2.url, "meta_ttl=1")
    keys = os.open(m.join("service-accounts", name, "keys"), os.O_RDONLY)
    made = [sid]
    try:
        # made again: the key under the old UUID is 404
        assert at(keys, "k/id").strip()
        _delete_account(srv, sid)
        new_sid = srv.create_service_account(name)["id"]
        made.append(new_sid)
        new_kid = srv.create_api_key(new_sid, "k")["id"]
        expire(1)
        assert at(keys, "k/id") == new_kid + "\n"
        assert m.text("service-accounts/%s/keys/k/id" % name) == \
            new_kid + "\n"
        assert m.text("service-accounts/%s/id" % name) == new_sid + "\n"

        # renamed: the old name is gone, the new one reads
        other = name + "-moved"
        srv.api("PUT", "%s/%s" % (SAS, new_sid),
                json={"name": other}).raise_for_status()
        expire(1)
        assert os_error(lambda: m.text(
            "service-accounts/%s/keys/k/id" % name)) == errno.ENOENT
        assert m.text("service-accounts/%s/keys/k/id" % other) == \
            new_kid + "\n"
    finally:
        os.close(keys)
        for i in made:
            _delete_account(srv, i)


def test_changes_elsewhere_show_within_meta_ttl(scale_server, accounts,
                                                sproxy, admin):
    """With 2,000 accounts listed, changes made over REST (deactivate,
    create, delete) show once the daemon asks again, which it does within
    meta_ttl (and the time to ask), however long the answer takes."""
    srv = scale_server
    ttl = 1
    m = admin(sproxy.url, "meta_ttl=%d" % ttl)
    sadir = m.join("service-accounts")
    t, tid = accounts.target, accounts.target_id
    assert m.text("service-accounts/%s/active" % t) == "1\n"
    listed = set(os.listdir(sadir))
    gone = accounts.new_name()
    gone_id = srv.create_service_account(gone)["id"]
    t0 = time.monotonic()
    new = accounts.new_name()
    until_asked_again(sproxy, t0, ttl, lambda: gone in os.listdir(sadir),
                      "an account made elsewhere to be listed")
    assert new not in listed

    try:
        srv.api("PUT", SAS + "/" + tid,
                json={"active": False}).raise_for_status()
        srv.create_service_account(new)
        srv.api("DELETE", SAS + "/" + gone_id).raise_for_status()
        t0 = time.monotonic()
        until_asked_again(
            sproxy, t0, ttl,
            lambda: m.text("service-accounts/%s/active" % t) == "0\n",
            "account deactivated elsewhere")
        until_asked_again(sproxy, t0, ttl, lambda: new in os.listdir(sadir),
                          "new account")
        assert os.path.isdir(os.path.join(sadir, new))
        until_asked_again(
            sproxy, t0, ttl,
            lambda: not os.path.exists(os.path.join(sadir, gone)),
            "deleted account to vanish")
        assert gone not in os.listdir(sadir)
    finally:
        srv.api("PUT", SAS + "/" + tid, json={"active": True})


# ------------------------------------------------- idle, reading, checks


def test_idle_mount_sends_only_refreshes_reader_sends_checks(
        zenml_server, service_account, proxy, proxy2, mount):
    """Two mounts side by side for 60 s with check_interval=5 and
    token_lifetime=60 (a refresh about every 15 s): the idle one sends
    its refreshes and nothing else; the one whose token is read in a loop
    sends a credential check about every check_interval as well."""
    sa = service_account
    opts = "token_lifetime=60,check_interval=5"
    idle = mount(sa.key, opts, url=proxy.url)
    busy = mount(sa.key, opts, url=proxy2.url)
    time.sleep(0.5)
    st_idle, st_busy = idle.status(), busy.status()
    proxy.reset_counts()
    proxy2.reset_counts()
    stop = threading.Event()
    reads, errors = [0], []

    def reader():
        path = busy.join("token")
        while not stop.is_set():
            try:
                with open(path, "rb") as f:
                    assert f.read()
                reads[0] += 1
            except (OSError, AssertionError) as e:
                errors.append(e)
            time.sleep(0.05)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    secs = 60
    try:
        time.sleep(secs)
    finally:
        stop.set()
        th.join(10)
    c_idle, c_busy = proxy.method_counts, proxy2.method_counts
    refr_idle = int(idle.status()["refreshes"]) - int(st_idle["refreshes"])
    refr_busy = int(busy.status()["refreshes"]) - int(st_busy["refreshes"])
    assert not errors, errors[:3]
    assert reads[0] > secs * 5

    # Idle: refreshes only.
    assert 2 <= refr_idle <= 6, refr_idle
    assert c_idle == {("GET", "/api/v1/api_token"): refr_idle}

    # Reading: its refreshes, and a check per check_interval (+ jitter up
    # to interval/5 and the request's time).
    checks = c_busy.pop(("GET", "/api/v1/current-user"), 0)
    assert secs / (5 + 1 + 0.5) - 1 <= checks <= secs / 5 + 1, checks
    assert c_busy == {("GET", "/api/v1/api_token"): refr_busy}


def test_key_deactivated_elsewhere_is_ekeyrevoked_while_read(
        zenml_server, service_account, proxy, mount):
    """While the token is read, deactivating the daemon's key over REST
    fails reads with EKEYREVOKED within check_interval + a margin."""
    sa = service_account
    interval = 5
    m = mount(sa.key, "check_interval=%d" % interval, url=proxy.url)
    m.expect_errors = True
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:      # someone reads the token
        assert m.read("token")
        time.sleep(0.05)
    zenml_server.set_api_key_active(sa.id, sa.key_id, False)
    t0 = time.monotonic()
    err = None
    while err is None and time.monotonic() - t0 < interval * 3:
        err = os_error(lambda: m.read("token"))
        time.sleep(0.05)
    took = time.monotonic() - t0
    assert err == errno.EKEYREVOKED, (errno.errorcode.get(err, err), took)
    # check_interval, its jitter (up to a fifth), the check itself
    assert took <= interval + interval / 5 + 2, took
    assert m.status()["state"] == "unauthenticated"


# ---------------------------------------------------------------- memory


@pytest.mark.skipif(SANITIZED, reason="ASan's allocator keeps freed "
                    "memory in quarantine: no memory goal holds")
def test_memory_flat_over_2000_refreshes(zenml_server, service_account,
                                         proxy, mount):
    """Three rounds of 2,000 writes to refresh: exactly 2,000 mints each,
    and the daemon's memory does not grow with them.  A leak grows in
    every round; something that does not follow the refreshes grows in
    one step now and then (measured over 15 rounds: 0-20 KiB in 13, a step
    of 108 and 124 KiB in two; once, under the load of the other suite,
    120 KiB in two rounds in a row; its source is not found), so a round
    may take such a step, and one at least must be flat."""
    m = mount(service_account.key, url=proxy.url)
    pid = m.proc.pid

    def refresh(n):
        path = m.join("refresh")
        for _ in range(n):
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, b"1\n")
            finally:
                os.close(fd)

    # Warm-up: the allocator's arenas and the TLS library's caches grow
    # for the first few thousand refreshes (measured: +220 KiB over 5,000,
    # then flat over 10,000 more). Wait for a round that grows nothing.
    for _ in range(12):
        before = anon(pid)
        refresh(500)
        if anon(pid) <= before:
            break
    grew = []
    for _ in range(3):
        a0, r0 = anon(pid), vmrss(pid)
        st0 = int(m.status()["refreshes"])
        proxy.reset_counts()
        refresh(2000)
        assert proxy.method_counts == {("GET", "/api/v1/api_token"): 2000}
        assert int(m.status()["refreshes"]) - st0 == 2000
        grew.append((anon(pid) - a0, vmrss(pid) - r0))
    kib = [(a // KIB, r // KIB) for a, r in grew]
    assert min(a for a, _ in grew) <= 64 * KIB, \
        "anon grew in every round (KiB anon, VmRSS): %s" % kib
    assert max(a for a, _ in grew) <= 256 * KIB, kib
    assert min(r for _, r in grew) <= 128 * KIB, kib
    assert max(r for _, r in grew) <= 512 * KIB, kib


def _settled(pid, peak, ttl):
    """Anonymous memory once the listing that raised it to peak expired
    and was swept (it drops by 1 MiB or more), or after 2*ttl + 2 s."""
    end = time.monotonic() + 2 * ttl + 2
    while time.monotonic() < end and anon(pid) > peak - MIB:
        time.sleep(0.1)
    time.sleep(0.2)
    return anon(pid)


@pytest.mark.skipif(SANITIZED, reason="ASan's allocator keeps freed "
                    "memory in quarantine: no memory goal holds")
def test_memory_flat_over_repeated_listings(scale_server, accounts, sproxy,
                                            admin):
    """ls -l of 2,000 accounts, five times, each a new list: the memory
    after each listing, and once it expired, stays where the second left
    it (the first warms the allocator up), and once expired each is back
    within 1 MiB of where the mount started."""
    ttl = 1
    m = admin(sproxy.url, "meta_ttl=%d" % ttl)
    pid = m.proc.pid
    sadir = m.join("service-accounts")
    peaks, settled = [], []
    idle = anon(pid)
    sproxy.reset_counts()
    for i in range(5):
        sh("ls -l > /dev/null", sadir)
        peaks.append(anon(pid))
        settled.append(_settled(pid, peaks[-1], ttl))
    assert sproxy.method_counts == {("GET", SAS): 5}
    kib = lambda v: ["%d KiB" % (a // KIB) for a in v]  # noqa: E731
    assert max(peaks[1:]) - peaks[1] <= MIB, kib(peaks)
    assert max(settled[1:]) - settled[1] <= 512 * KIB, kib(settled)
    # what a listing takes is handed back once it expired (docs/design.md,
    # Scale)
    assert all(s - idle <= MIB for s in settled), (idle // KIB,
                                                   kib(settled))


@pytest.mark.skipif(SANITIZED, reason="ASan's allocator keeps freed "
                    "memory in quarantine: no memory goal holds")
def test_listing_memory_goals(scale_server, accounts, sproxy, admin):
    """docs/design.md, Scale: right after ls -l of 2,000 accounts the
    daemon holds at most 3x the list's wire size above idle, and within
    2*meta_ttl of the walk it is back within 1 MiB of idle."""
    ttl = 1
    r = scale_server.api("GET", SAS, params={"page": 1, "size": 10000,
                                             "hydrate": "true"},
                         timeout=120)
    wire = len(r.content)
    m = admin(sproxy.url, "meta_ttl=%d" % ttl)
    pid = m.proc.pid
    sadir = m.join("service-accounts")
    time.sleep(0.5)
    idle = anon(pid)
    failed = []
    for i in range(2):
        sh("ls -l > /dev/null", sadir)
        peak = anon(pid)
        if peak - idle > 3 * wire:
            failed.append("after ls -l #%d: %d KiB above idle (%d KiB) = "
                          "%.1fx the wire size (%d KiB)"
                          % (i + 1, (peak - idle) // KIB, idle // KIB,
                             (peak - idle) / wire, wire // KIB))
        t0 = time.monotonic()
        while anon(pid) - idle > MIB and time.monotonic() - t0 < 2 * ttl:
            time.sleep(0.1)
        now = anon(pid)
        if now - idle > MIB:
            failed.append("%.1f s after ls -l #%d: %d KiB above idle"
                          % (time.monotonic() - t0, i + 1,
                             (now - idle) // KIB))
        _settled(pid, peak, ttl)
    assert not failed, "; ".join(failed)
