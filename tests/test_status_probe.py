"""`zenmlfs status` keeps its 2 s promise on a mount that never answers.

The mount is tests/fusehang.py's: a FUSE server that reads every request
and answers none, so the probe waits in the kernel uninterruptibly (as on
a daemon that is stuck, not merely stopped: a stopped daemon's requests
are still queued, and a killed waiter drops them).  It lives in a mount
namespace of its own, so no other test or command can trip over it.
"""

import pytest

import fusehang
from conftest import ZENMLFS_BIN, SANITIZED

# The promise is 2 s; on a loaded 2-core machine (or an ASan build) the
# fork, the exec and the exit take some more.
PROMISE = 2.0
SLACK = 6.0 if SANITIZED else 3.0

pytestmark = pytest.mark.skipif(bool(fusehang.usable()),
                                reason=fusehang.usable() or "usable")


def test_status_exits_on_a_mount_that_never_answers():
    res = fusehang.run([ZENMLFS_BIN, "status", "{mnt}"], timeout=20)
    assert res["took"] is not None, (
        "zenmlfs status was still running after 20 s on a mount that "
        "never answers: %r" % res)
    assert PROMISE - 0.1 <= res["took"] < PROMISE + SLACK, res
    assert res["rc"] == 3, res
    assert res["stdout"] == "", res
    assert res["stderr"] == ("zenmlfs: status: '%s' does not answer within "
                             "2 s\n" % res["mnt"]), res
    # The probe it left behind (stuck, so not reaped) went as soon as
    # the connection was aborted: nothing stays stuck.
    assert res["reaped"] == 1 and res["left"] == 0, res


def test_status_on_a_dead_mount_says_so_at_once():
    """A dead mount (its daemon gone) answers ENOTCONN: no wait."""
    res = fusehang.run([ZENMLFS_BIN, "status", "{mnt}"], dead=True,
                       timeout=20)
    assert res["took"] is not None and res["took"] < PROMISE, res
    assert res["rc"] == 3, res
    assert "Transport endpoint is not connected" in res["stderr"], res
    # The probe answered: it was reaped, nothing left for init.
    assert res["left"] == 0 and res["reaped"] == 0, res
