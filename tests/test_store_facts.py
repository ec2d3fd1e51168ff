"""What the metadata cache knows (issue 18, items 1 and 4), counted at the
fault proxy and checked against the server over REST.

- A 404 is a fact: stats of one missing name within meta_ttl send one GET;
  mkdir of that name through the tree shows it at once; after meta_ttl
  the name is asked for again.
- An account made by mkdir never vanishes: a listing fetched just before
  the write that lands just after it (the proxy holds list replies back)
  does not drop it, so `mkdir sa && mkdir sa/keys/k` always works while
  `ls -l` runs next to it.
"""

import errno
import os
import secrets
import threading
import time

import proxy as proxy_mod
from conftest import SAS, os_error


def uniq(tag="sa"):
    return "zfs-%s-%s" % (tag, secrets.token_hex(4))


def rest_sa(srv, name):
    r = srv.api("GET", SAS + "/" + name)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()


def delete_sa(srv, name, keys=()):
    """Best effort over REST: the account's keys, then the account."""
    sa = rest_sa(srv, name)
    if not sa:
        return
    for k in keys:
        srv.api("DELETE", "%s/%s/api_keys/%s" % (SAS, sa["id"], k),
                timeout=10)
    srv.api("DELETE", "%s/%s" % (SAS, sa["id"]), timeout=10)


# ------------------------------------------------------- a 404 is a fact


def test_missing_name_is_asked_once_per_meta_ttl(zenml_server, proxy,
                                                 admin_mount):
    srv, ttl = zenml_server, 3
    m = admin_mount("meta_ttl=%d" % ttl, proxy.url)
    name = uniq("ghost")
    path = m.join("service-accounts", name)
    get_path = SAS + "/" + name
    try:
        proxy.reset_counts()
        t0 = time.monotonic()
        for _ in range(50):
            assert os_error(lambda: os.stat(path)) == errno.ENOENT
        assert time.monotonic() - t0 < ttl, "too slow to test meta_ttl"
        assert proxy.count(get_path, method="GET") == 1, proxy.counts

        # mkdir through the tree: there at once, no GET, the server's.
        os.mkdir(path)
        sa = rest_sa(srv, name)
        assert sa is not None
        assert m.text(os.path.join("service-accounts", name, "id")) \
            == sa["id"] + "\n"
        assert os.path.isdir(path)
        assert proxy.count(get_path, method="GET") == 1, proxy.counts
    finally:
        delete_sa(srv, name)

    # Another missing name: asked again once meta_ttl is over.
    name = uniq("ghost")
    path = m.join("service-accounts", name)
    get_path = SAS + "/" + name
    assert os_error(lambda: os.stat(path)) == errno.ENOENT
    t0 = time.monotonic()
    assert proxy.count(get_path, method="GET") == 1
    while proxy.count(get_path, method="GET") == 1 and \
            time.monotonic() - t0 < ttl + 3:
        assert os_error(lambda: os.stat(path)) == errno.ENOENT
        time.sleep(0.05)
    took = time.monotonic() - t0
    assert proxy.count(get_path, method="GET") == 2, proxy.counts
    assert ttl - 0.5 <= took <= ttl + 1.5, took


# --------------------------------------- a write is not undone by a listing


class SlowListProxy(proxy_mod.FaultProxy):
    """The fault proxy, except that a reply to GET of exactly slow_path is
    held back slow_s seconds after the server gave it: a listing fetched
    before a write lands after it."""

    slow_path = SAS
    slow_s = 0.4

    def _listen(self):
        outer = self

        class Handler(proxy_mod._Handler):
            def _send(self, status, headers, body):
                if (self.command == "GET" and
                        self.path.split("?", 1)[0] == outer.slow_path):
                    time.sleep(outer.slow_s)
                super()._send(status, headers, body)

        srv = proxy_mod._Server(("127.0.0.1", self.port or 0), Handler)
        srv.proxy = self
        self.port = srv.server_address[1]
        t = threading.Thread(target=srv.serve_forever,
                             kwargs={"poll_interval": 0.1},
                             name="slow-list-proxy", daemon=True)
        t.start()
        self._srv, self._thread = srv, t


def test_mkdir_survives_a_listing_in_flight(zenml_server, admin_mount):
    srv = zenml_server
    slow = SlowListProxy("127.0.0.1", srv.port).start()
    names = []
    try:
        m = admin_mount("meta_ttl=1", slow.url)
        top = m.join("service-accounts")
        stop = threading.Event()
        walks = [0]
        walk_errors = []

        def ls_l():
            while not stop.is_set():
                try:
                    for e in os.scandir(top):
                        try:
                            e.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            pass  # removed meanwhile: fine
                    walks[0] += 1
                except OSError as e:
                    walk_errors.append(e)
                stop.wait(0.1)

        t = threading.Thread(target=ls_l, daemon=True)
        t.start()
        failures = []
        lists_before = slow.count(SAS, method="GET")
        try:
            for i in range(200):
                name = "zfs-race-%s-%d" % (secrets.token_hex(3), i)
                names.append(name)
                try:
                    os.mkdir(os.path.join(top, name))
                    os.mkdir(os.path.join(top, name, "keys", "k"))
                except OSError as e:
                    failures.append("%s: %s" % (name, e))
        finally:
            stop.set()
            t.join(30)
        lists = slow.count(SAS, method="GET") - lists_before
        assert not failures, "%d of 200 failed: %s" % (len(failures),
                                                       failures[:5])
        assert not walk_errors, walk_errors[:3]
        # The race was on: listings were fetched all along.
        assert walks[0] > 20 and lists > 10, (walks[0], lists)
        # Every account and key is on the server, and in the tree.
        listed = set(os.listdir(top))
        for name in names:
            sa = rest_sa(srv, name)
            assert sa is not None, name
            assert name in listed, name
            r = srv.api("GET", "%s/%s/api_keys/k" % (SAS, sa["id"]))
            assert r.status_code == 200, (name, r.text)
        m.umount()
    finally:
        slow.stop()
        for name in names:
            delete_sa(srv, name, keys=("k",))
