"""A metadata file read to end of file is one rendering, however it is
read and however fast it changes (issue: a read of `status` once mixed
294 bytes of one rendering with 1 byte of the next)."""

import os
import threading

from conftest import os_error  # noqa: F401


def _check_status(text, keys):
    """One whole rendering of status: 'key: value' lines, each key once,
    the same keys as a reference read, a final newline."""
    assert text.endswith("\n"), repr(text[-40:])
    seen = []
    for line in text[:-1].split("\n"):
        k, sep, _ = line.partition(": ")
        assert sep and k and k.replace("_", "").isalpha(), repr(text)
        seen.append(k)
    assert len(seen) == len(set(seen)), repr(text)
    assert set(seen) == keys, repr(text)


def _read_whole(path):
    with open(path) as f:
        return f.read()


def _read_chunks(path, size):
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while True:
            b = os.read(fd, size)
            if not b:
                return b"".join(parts).decode()
            parts.append(b)
    finally:
        os.close(fd)


def test_status_read_to_eof_is_one_rendering(zenml_server, service_account,
                                             mount):
    """Three threads read status to end of file (whole, and in 7-byte
    pieces) while a fourth refreshes the token as fast as it can, which
    changes status (and its length) with every refresh: every read is one
    whole rendering."""
    m = mount(service_account.key)
    path = m.join("status")
    keys = {line.partition(": ")[0] for line in
            _read_whole(path).splitlines()}
    assert "state" in keys and "refreshes" in keys
    stop = threading.Event()
    bad, counts, errors = [], [0, 0, 0], []
    refreshes = [0]

    def refresher():
        while not stop.is_set():
            try:
                m.write("refresh", "1\n")
                refreshes[0] += 1
            except OSError as e:  # a refresh may fail: the reads go on
                errors.append(e)

    def reader(i):
        for n in range(1500):
            text = (_read_whole(path) if i < 2 else
                    _read_chunks(path, 7))
            try:
                _check_status(text, keys)
            except AssertionError as e:
                bad.append(str(e))
            counts[i] += 1

    w = threading.Thread(target=refresher)
    rs = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    w.start()
    for t in rs:
        t.start()
    for t in rs:
        t.join(300)
    stop.set()
    w.join(60)
    assert sum(counts) == 4500
    # the file did change under the readers
    assert refreshes[0] >= 5, (refreshes, errors[:3])
    assert not bad, "%d mixed reads, e.g. %s" % (len(bad), bad[0])
