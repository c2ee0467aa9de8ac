"""`stop_group`: once it returns, no thread of the stopped process acts on data that arrives afterwards.

A bare `kill(SIGSTOP)` does not give that (the kernel wakes one thread to take the group stop; another thread
blocked in `recv` can wake on the data first). The mailing kill tests rely on it to stop a worker between the
provider's answer and postrelay's record.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time

from tests.support.processes import group_threads, stop_group


def _child(sock: socket.socket, acted: int) -> None:
    """Four idle threads and one blocked in recv that writes to `acted` when data arrives."""
    os.setpgid(0, 0)
    for _ in range(4):
        threading.Thread(target=lambda: time.sleep(60), daemon=True).start()
    reader = threading.Thread(target=lambda: (sock.recv(16), os.write(acted, b"x")))
    reader.start()
    os.write(acted, b"r")
    reader.join()
    os._exit(0)


def test_no_thread_acts_on_data_sent_after_stop_group() -> None:
    acted_after_stop = 0
    for _ in range(60):
        ours, theirs = socket.socketpair()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            ours.close()
            _child(theirs, w)
        theirs.close()
        try:
            assert os.read(r, 1) == b"r"
            stop_group(pid)
            assert group_threads(pid) and set(group_threads(pid)) <= set("tT")
            ours.send(b"answer")
            if select.select([r], [], [], 0.01)[0]:
                acted_after_stop += 1
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            os.close(w)
            ours.close()
    assert acted_after_stop == 0
