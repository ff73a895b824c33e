"""One I/O thread for a real-time run: camera read-outs and every run-file write, in order.

On a real or paced clock the runner's own thread keeps the potentiostat staircase on time; a
full-frame read-out (40-800 ms for the simulated camera, a socket transfer on hardware) and the
HDF5 write that follows it run here instead. Every run-file operation goes through this one
thread, in the order the runner submitted it (h5py objects are not shared between threads, and the
record order of the file is the order of events). On a virtual clock (a dry run) `IoWorker` runs
each job at once in the caller's thread: the dry run stays deterministic and single-threaded.

Errors: the first exception of a job is kept and raised in the runner's thread by `check()`
(which the runner calls at every stair and every wait) or `drain()`. After an error, or once
`close(cancel=True)` is called, read-outs that have not started are skipped; file writes already
queued still run (they are the run's record up to the fault).
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

_STOP = object()


class IoWorker:
    """Runs jobs in submission order on one thread (`threaded`) or at once in the caller's."""

    def __init__(self, threaded: bool, max_queued: int = 256, while_full: Callable[[], None] | None = None) -> None:
        """`while_full`: called every 0.2 s while a submit waits for room in a full queue (the
        runner renews its safety lease there: the run is alive, held back by a long read-out)."""
        self.threaded = threaded
        self._while_full = while_full
        # set while no camera read-out is queued or running: the camera may be configured/started
        self.camera_free = threading.Event()
        self.camera_free.set()
        # held by the I/O thread while a job touches the run file, and by the runner to close it
        self.file_lock = threading.Lock()
        self._queue: queue.Queue[Any] = queue.Queue(max_queued)
        self._pending = 0
        self._idle = threading.Condition()
        self._error: BaseException | None = None
        self._cancel = False
        self._file_closed = False
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._loop, name="insitem-io", daemon=True)
            self._thread.start()

    # -- submitting ---------------------------------------------------------------------------------
    def submit(self, job: Callable[[], None]) -> None:
        """A run-file write (or anything that must stay in order with them)."""
        if not self.threaded:
            job()
            return
        self._put(("file", job, None))

    def submit_readout(self, read: Callable[[], Any], write: Callable[[Any], None]) -> None:
        """A camera read-out `read()` (the camera is busy until it returns) and the write of its
        result `write(result)`, in order with the other jobs."""
        if not self.threaded:
            write(read())
            return
        self.camera_free.clear()
        try:
            self._put(("readout", read, write))
        except BaseException:
            self.camera_free.set()
            raise

    def _put(self, item: tuple[str, Any, Any]) -> None:
        self.check()
        with self._idle:
            self._pending += 1
        while True:
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._error is not None or self._thread is None or not self._thread.is_alive():
                    with self._idle:
                        self._pending -= 1
                    self.check()
                    raise RuntimeError("the run-file I/O thread stopped") from None
                if self._while_full is not None:
                    try:
                        self._while_full()
                    except BaseException:
                        with self._idle:
                            self._pending -= 1
                        raise

    # -- the runner's side --------------------------------------------------------------------------
    def check(self) -> None:
        """Raise the first exception a job raised, in the caller's thread."""
        if self._error is not None:
            raise self._error

    def drain(self) -> None:
        """Wait until every submitted job has run; raise a job's exception."""
        if self.threaded:
            with self._idle:
                while self._pending and self._error is None:
                    self._idle.wait(0.2)  # a timeout keeps the wait interruptible by signals
        self.check()

    def wait_camera_free(self, timeout_s: float) -> bool:
        """True once no read-out is queued or running (False after `timeout_s`)."""
        if self.camera_free.wait(max(timeout_s, 0.0)):
            return True
        self.check()
        return False

    def close(self, cancel: bool, timeout_s: float = 30.0) -> bool:
        """Stop the thread after the queued jobs (skipping read-outs not yet started if `cancel`).

        Returns True when the thread ended in time. Either way, the run file belongs to the caller
        afterwards: a job still running then writes nothing more.
        """
        if self._thread is None:
            return True
        if cancel:
            self._cancel = True
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(timeout_s)
        ended = not self._thread.is_alive()
        if self.file_lock.acquire(timeout=timeout_s):
            self._file_closed = True
            self.file_lock.release()
        else:
            self._file_closed = True
        return ended

    def abandon(self) -> None:
        """Give the run file to the caller now: a job still running writes nothing more."""
        self._cancel = True
        self._file_closed = True

    # -- the I/O thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            kind, first, second = item
            try:
                if kind == "readout":
                    try:
                        if self._cancel or self._error is not None:
                            continue
                        result = first()
                    finally:
                        self.camera_free.set()
                    with self.file_lock:
                        if not self._file_closed:
                            second(result)
                else:
                    with self.file_lock:
                        if not self._file_closed:
                            first()
            except BaseException as exc:  # noqa: BLE001 - handed to the runner's thread
                if self._error is None:
                    self._error = exc
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()


class QueuedRunFile:
    """The runner's view of the run file on a real-time run: each call becomes an I/O job."""

    def __init__(self, worker: IoWorker, runfile: Any) -> None:
        self._worker = worker
        self._file = runfile

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        method = getattr(self._file, name)
        self._worker.submit(lambda: method(*args, **kwargs))

    def append_exposure(self, window: str, data: Any, **record: Any) -> None:
        self._call("append_exposure", window, data, **record)

    def append_electrochemistry(self, t_s: Any, voltage_V: Any, current_A: Any, **cols: Any) -> None:
        self._call("append_electrochemistry", t_s, voltage_V, current_A, **cols)

    def log(self, t_s: float, level: str, message: str) -> None:
        self._call("log", t_s, level, message)

    def append_drift(self, t_s: float, window: str, index: int, measured_m: float, sigma_m: float,
                     image_shift_m: float, action: str, *more: Any) -> None:
        """`more`: kind, dose_e_per_m2, stage_y_m (RunFile.append_drift)."""
        self._call("append_drift", t_s, window, index, measured_m, sigma_m, image_shift_m, action, *more)

    def begin_step(self, index: int, name: str, t_s: float) -> None:
        self._call("begin_step", index, name, t_s)

    def end_step(self, index: int, t_s: float, status: Any = "completed") -> None:
        self._call("end_step", index, t_s, status)

    def write_ground_truth(self, t_s: float, profiles: Any = None, scalars: Any = None) -> None:
        self._call("write_ground_truth", t_s, profiles=profiles, scalars=scalars)

    def close(self, status: Any = "completed", reason: str = "") -> None:
        raise RuntimeError("the runner closes the run file itself, after the I/O thread stopped")
