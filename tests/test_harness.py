"""Checks of the test harness itself (no zenmlfs needed): the real server
fixture, the REST shapes the other tests rely on, and the fault proxy."""

import json
import socket
import threading
import time

import pytest

from conftest import TOKENS_BOUND
import requests

from zenserver import fake_api_key, jwt_claims


def test_server_info_and_admin(zenml_server):
    r = zenml_server.api("GET", "/api/v1/info", token="")
    assert r.status_code == 200
    info = r.json()
    for k in ("id", "name", "version", "auth_scheme", "deployment_type"):
        assert k in info
    assert info["auth_scheme"] == "OAUTH2_PASSWORD_BEARER"
    me = zenml_server.current_user(zenml_server.admin_token()).json()
    assert me["name"] == "default"
    assert me["body"]["is_service_account"] is False


def test_service_account_key_and_token(zenml_server, service_account):
    sa = service_account
    assert sa.key.startswith("ZENKEY_")
    session = sa.session_token()
    tok = zenml_server.mint_token(session, expires_in=60)
    claims = jwt_claims(tok)
    assert claims["sub"] == sa.id
    if TOKENS_BOUND:
        assert claims["api_key_id"] == sa.key_id
    assert 55 <= claims["exp"] - time.time() <= 61
    me = zenml_server.current_user(tok)
    assert me.status_code == 200
    assert me.json()["id"] == sa.id
    assert me.json()["name"] == sa.name
    assert me.json()["body"]["is_service_account"] is True
    # Deactivation kills the key's tokens at once (its minted tokens only
    # from 0.96.3: TOKENS_BOUND) and its logins.
    zenml_server.set_api_key_active(sa.id, sa.key_id, False)
    r = zenml_server.current_user(tok)
    if TOKENS_BOUND:
        assert r.status_code == 401
        assert r.json()["detail"][0] == "CredentialsNotValid"
    else:
        assert r.status_code == 200
    assert zenml_server.current_user(session).status_code == 401
    assert zenml_server.login("zenml-api-key", sa.key).status_code == 401


def test_unknown_key_is_rejected(zenml_server):
    r = zenml_server.login("zenml-api-key", fake_api_key())
    assert r.status_code == 401
    assert r.json()["detail"][0] == "CredentialsNotValid"


def test_proxy_counts_and_rewrites(zenml_server, service_account, proxy):
    session = service_account.session_token()
    hdr = {"Authorization": "Bearer " + session}
    url = proxy.url + "/api/v1/api_token"
    params = {"token_type": "generic", "expires_in": 60}
    tok = requests.get(url, params=params, headers=hdr, timeout=10).json()
    assert zenml_server.current_user(tok).status_code == 200
    assert proxy.count("/api/v1/api_token") == 1
    proxy.rewrite_token = lambda t: t + "x"
    tok2 = requests.get(url, params=params, headers=hdr, timeout=10).json()
    assert tok2.endswith("x")
    assert proxy.tokens_out == [tok, tok2]
    assert proxy.count("/api/v1/api_token") == 2


def test_proxy_faults(zenml_server, proxy):
    u = proxy.url + "/api/v1/info"
    assert requests.get(u, timeout=10).json()["name"]
    proxy.set_mode("status", status=503)
    r = requests.get(u, timeout=10)
    assert r.status_code == 503 and r.json()["detail"][0] == "ServerError"
    proxy.set_mode("garbage")
    r = requests.get(u, timeout=10)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        json.loads(r.text)
    proxy.set_mode("refuse")
    with pytest.raises(requests.ConnectionError):
        requests.get(u, timeout=10)
    s = socket.socket()
    assert s.connect_ex(("127.0.0.1", proxy.port)) != 0
    s.close()
    proxy.set_mode("hang")
    with pytest.raises(requests.Timeout):
        requests.get(u, timeout=1)
    proxy.set_mode("pass")
    assert requests.get(u, timeout=10).status_code == 200
    proxy.add_fault("/api/v1/info", "status", status=429, count=1)
    assert requests.get(u, timeout=10).status_code == 429
    assert requests.get(u, timeout=10).status_code == 200
    # A hung request is released when the fault is cleared.
    proxy.add_fault("/api/v1/info", "hang")
    out = []
    t = threading.Thread(target=lambda: out.append(
        _get_or_exc(u)))
    t.start()
    time.sleep(0.5)
    proxy.clear_faults()
    t.join(10)
    assert not t.is_alive()


def _get_or_exc(u):
    try:
        return requests.get(u, timeout=20)
    except requests.RequestException as e:
        return e


def test_server_restart_keeps_tokens(zenml_server, service_account):
    tok = zenml_server.mint_token(service_account.session_token(), 600)
    zenml_server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(zenml_server.url + "/health", timeout=5)
    zenml_server.start()
    assert zenml_server.current_user(tok).status_code == 200


def test_resigned_token_with_padding_is_valid(zenml_server, service_account):
    """The length-change test feeds zenmlfs re-signed tokens with a
    padding claim; the server must accept them."""
    from zenserver import jwt_sign
    tok = zenml_server.mint_token(service_account.session_token(), 120)
    claims = jwt_claims(tok)
    claims["pad"] = "p" * 77
    tok2 = jwt_sign(claims, zenml_server.jwt_secret)
    assert len(tok2) > len(tok) + 77
    r = zenml_server.current_user(tok2)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == service_account.id
    bad = jwt_sign(claims, "0" * 64)
    assert zenml_server.current_user(bad).status_code == 401


def test_proxy_hold_release_delay(zenml_server):
    """"hold" keeps requests until release() (forwarded or dropped, only
    under the prefix given), "delay" forwards after its delay, and stop()
    ends every held request's thread."""
    from proxy import FaultProxy
    p = FaultProxy("127.0.0.1", zenml_server.port).start()
    try:
        info = p.url + "/api/v1/info"
        health = p.url + "/health"
        p.add_fault("/api/v1/info", "hold")
        outs = [[], [], []]
        ths = [threading.Thread(target=lambda o=o, u=u: o.append(
            _get_or_exc(u))) for o, u in zip(outs, (info, info, health))]
        for t in ths:
            t.start()
        assert p.wait_held(2, "/api/v1/info", timeout=10)
        ths[2].join(10)                 # not under the prefix: passes
        assert outs[2][0].status_code == 200
        assert p.held("/api/v1/info") == 2 and p.held("/health") == 0
        assert p.release("/health") == 0
        assert p.release("/api/v1/info", forward=False) == 2
        for t in ths[:2]:
            t.join(10)
            assert not t.is_alive()
        for o in outs[:2]:
            assert isinstance(o[0], requests.ConnectionError), o
        # the fault stays: the next one is held, then forwarded
        out = []
        t = threading.Thread(target=lambda: out.append(_get_or_exc(info)))
        t.start()
        assert p.wait_held(1, timeout=10)
        assert p.release() == 1
        t.join(10)
        assert out[0].status_code == 200
        # a client that gives up is no longer held
        with pytest.raises(requests.Timeout):
            requests.get(info, timeout=0.5)
        deadline = time.monotonic() + 10
        while p.held():
            assert time.monotonic() < deadline, "held after client left"
            time.sleep(0.05)
        p.remove_fault("/api/v1/info")
        assert requests.get(info, timeout=10).status_code == 200
        # delay: waits, then forwards (the bound is the mode's promise)
        p.add_fault("/api/v1/info", "delay", delay=1.0)
        t0 = time.monotonic()
        assert requests.get(info, timeout=10).status_code == 200
        assert time.monotonic() - t0 >= 1.0
        # stop() drops what is still held and ends its threads
        p.clear_faults()
        p.add_fault("/api/v1/info", "hold")
        out = []
        t = threading.Thread(target=lambda: out.append(_get_or_exc(info)))
        t.start()
        assert p.wait_held(1, timeout=10)
        with p._lock:
            handlers = [h.thread for h in p._held]
    finally:
        p.stop()
    t.join(10)
    assert isinstance(out[0], requests.ConnectionError), out
    assert not p.held()
    assert handlers and not [th for th in handlers if th.is_alive()]
