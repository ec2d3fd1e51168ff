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
    """Read path to its end in pieces of size bytes, then read it again
    whole through the same descriptor: (pieces joined, whole)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while True:
            b = os.read(fd, size)
            if not b:
                break
            parts.append(b)
        return b"".join(parts).decode(), os.pread(fd, 65536, 0).decode()
    finally:
        os.close(fd)


def test_status_read_to_eof_is_one_rendering(zenml_server, service_account,
                                             mount):
    """Four threads read status to end of file (two whole, two in pieces
    of 9 and 10 bytes, then again whole through the same descriptor) while
    another refreshes the token as fast as it can, which changes status
    with every refresh: every read is one whole rendering, and an open
    file's content never changes under its reader."""
    m = mount(service_account.key)
    path = m.join("status")
    keys = {line.partition(": ")[0] for line in
            _read_whole(path).splitlines()}
    assert "state" in keys and "refreshes" in keys
    stop = threading.Event()
    bad, counts, errors = [], [0, 0, 0, 0], []
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
            try:
                if i < 2:
                    _check_status(_read_whole(path), keys)
                else:
                    # what an open file shows never changes under it
                    pieces, whole = _read_chunks(path, 7 + i)
                    _check_status(pieces, keys)
                    assert pieces == whole, (pieces, whole)
            except AssertionError as e:
                bad.append(str(e))
            counts[i] += 1

    w = threading.Thread(target=refresher)
    rs = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    w.start()
    for t in rs:
        t.start()
    for t in rs:
        t.join(300)
    stop.set()
    w.join(60)
    assert sum(counts) == 6000
    # the file did change under the readers
    assert refreshes[0] >= 5, (refreshes, errors[:3])
    assert not bad, "%d mixed reads, e.g. %s" % (len(bad), bad[0])
