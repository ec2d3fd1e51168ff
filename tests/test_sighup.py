"""SIGHUP with a new credential: the daemon tries it on the side and makes
it its own only once the server accepts it (issue 18, item 5).

A key file overwritten with garbage, with a well-formed ZENKEY_ no server
knows, or with a deactivated key, then SIGHUP: the refusal is logged
(without the key) and shown in status, the state stays ok, the token
still reads, a refresh still mints, and when the daemon has to log in
again (the fault proxy answers one api_token request 401
CredentialsNotValid) it does so with the key that works.  A good new key
then is installed: the tokens come from it (their api_key_id), and the
old key can go.
"""

import json
import os
import secrets
import signal
import time

import pytest

from conftest import (TOKENS_BOUND, distinct_token_gap, fake_api_key,
                      jwt_claims)

NOT_VALID = json.dumps({"detail": ["CredentialsNotValid",
                                   "injected by the test: session expired"]})
REFUSED = "SIGHUP: the new credential from the API key file was refused"


def _wait(pred, timeout):
    """Poll pred until it holds or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def _write_key(path, key):
    """Overwrite the key file in place (its 0600 mode stays)."""
    with open(path, "w") as f:
        f.write(key + "\n")


def _token_works(srv, tok):
    return srv.current_user(tok).status_code == 200


def _refresh(m):
    """echo 1 > refresh; the new token, once published (a rename through
    the mount just after the write returns)."""
    before = m.text("token")
    distinct_token_gap()
    m.write("refresh", "1")
    assert _wait(lambda: m.text("token") != before, 10), m.log()
    return m.text("token")


def _bad_key(kind, srv, sa):
    if kind == "garbage":
        return "not-a-key-" + secrets.token_hex(16)
    if kind == "unknown":
        return fake_api_key()
    k = srv.create_api_key(sa.id, "off-" + secrets.token_hex(3))
    srv.set_api_key_active(sa.id, k["id"], False)
    return k["body"]["key"]


@pytest.mark.parametrize("bad", ["garbage", "unknown", "deactivated"])
def test_sighup_refuses_a_bad_key_and_keeps_the_good_one(
        zenml_server, service_account, proxy, mount, bad):
    srv, sa = zenml_server, service_account
    m = mount(sa.key, url=proxy.url)
    m.expect_errors = True              # the refusal is logged as an error
    kf = os.path.join(m.workdir, "api-key")
    first = m.text("token")
    assert _token_works(srv, first)

    key = _bad_key(bad, srv, sa)
    _write_key(kf, key)
    proxy.reset_counts()
    m.proc.send_signal(signal.SIGHUP)
    assert _wait(lambda: "SIGHUP" in m.log(), 20), m.log()
    assert REFUSED in m.log()
    # The new key was tried on the side: one login, refused.
    assert proxy.count("/api/v1/login") == 1
    assert m.proc.poll() is None

    st = m.status()
    assert st["state"] == "ok", st
    assert "SIGHUP" in st["last_error"] and "refused" in st["last_error"], st
    assert key not in m.log() and key not in m.text("status")
    # The token is still served, and still the one the server knows.
    assert m.text("token") == first
    assert _token_works(srv, first)

    # A refresh mints with the session in use: no login needed.
    tok = _refresh(m)
    assert _token_works(srv, tok)
    assert proxy.count("/api/v1/login") == 1
    assert m.status()["state"] == "ok"

    # Make the daemon log in again: it does, with the key that works.
    proxy.add_fault("/api/v1/api_token", "status", status=401,
                    body=NOT_VALID, count=1)
    before = proxy.count("/api/v1/api_token")
    tok2 = _refresh(m)
    assert proxy.count("/api/v1/api_token") == before + 2   # 401, then ok
    assert proxy.count("/api/v1/login") == 2
    assert _token_works(srv, tok2)
    assert jwt_claims(tok2)["sub"] == sa.id
    if TOKENS_BOUND:
        assert jwt_claims(tok2).get("api_key_id") == sa.key_id
    assert m.status()["state"] == "ok", m.status()


def test_sighup_installs_a_good_new_key(zenml_server, service_account,
                                        proxy, mount):
    """After a refused reload, a good key and SIGHUP: logged in with it,
    tokens from it; the old key deactivated over REST does not matter any
    more, even across a forced login."""
    srv, sa = zenml_server, service_account
    m = mount(sa.key, url=proxy.url)
    m.expect_errors = True
    kf = os.path.join(m.workdir, "api-key")
    first = m.text("token")

    _write_key(kf, fake_api_key())
    m.proc.send_signal(signal.SIGHUP)
    assert _wait(lambda: REFUSED in m.log(), 20), m.log()

    new = srv.create_api_key(sa.id, "second")
    try:
        _write_key(kf, new["body"]["key"])
        m.proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: "SIGHUP: logged in again with the API key "
                     "file" in m.log(), 20), m.log()
        assert _wait(lambda: m.text("token") != first, 10)
        tok = m.text("token")
        assert _token_works(srv, tok)
        if TOKENS_BOUND:
            assert jwt_claims(tok).get("api_key_id") == new["id"]
        # The old key goes; a forced login uses the new one.
        srv.set_api_key_active(sa.id, sa.key_id, False)
        proxy.add_fault("/api/v1/api_token", "status", status=401,
                        body=NOT_VALID, count=1)
        logins = proxy.count("/api/v1/login")
        tok2 = _refresh(m)
        assert proxy.count("/api/v1/login") == logins + 1
        assert _token_works(srv, tok2)
        if TOKENS_BOUND:
            assert jwt_claims(tok2).get("api_key_id") == new["id"]
        assert m.status()["state"] == "ok", m.status()
    finally:
        m.umount()
        srv.api("DELETE", "/api/v1/service_accounts/%s/api_keys/%s"
                % (sa.id, new["id"]), timeout=10)
