"""The worker process: with `GATEWAY_WORKER_PROCESS` in effect, `serve` runs background jobs in
a child `responses-gateway worker` instead of its own event loop.

Why a process: a job costs about as much CPU as the enqueue that queued it, and run in the HTTP
process's loop it runs right after that enqueue, so the next request waits behind it. In a child
at a lower CPU priority (nice +10) the kernel lets HTTP requests preempt job execution on a
shared core, while idle cores still run jobs at full speed.

The parent's side is `WorkerProcess`: it starts the child, restarts it (with a backoff) when it
dies, and on shutdown forwards SIGTERM and waits for the child's own shutdown grace. The child's
side is `tie_to_parent`: the pair lives and dies as one gateway process.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import time
from contextlib import suppress

from app.config import Settings

log = logging.getLogger(__name__)

WORKER_NICE = 10
# On top of the child's shutdown grace: its release of unfinished jobs, the last usage flush.
STOP_MARGIN_SECONDS = 10.0
# Restart backoff: doubled after each quick death, back to the first step once a child has
# lived for STABLE_SECONDS (a crash loop costs little CPU and fills the log slowly).
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0
STABLE_SECONDS = 30.0
# How long the start of `serve` waits for its worker to be running jobs before it goes on.
READY_TIMEOUT_SECONDS = 30.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class WorkerProcess:
    """The child `responses-gateway worker` of a `serve` process, supervised."""

    def __init__(self, settings: Settings) -> None:
        self._nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICE)
        self._argv = [
            sys.executable,
            "-m",
            "app.cli",
            "worker",
            "--parent-pid",
            str(os.getpid()),
            "--nice",
            str(self._nice),
        ]
        # Exactly the parent's settings, whatever mix of environment, flags and defaults made
        # them; the models file is read again by the child (same path, same environment).
        self._env = {**os.environ, **settings.as_environment()}
        self._stop_timeout = settings.gateway_shutdown_grace_seconds + STOP_MARGIN_SECONDS
        self._process: asyncio.subprocess.Process | None = None
        self._started_at = 0.0
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="worker-process")

    async def _spawn(self) -> None:
        """Start a child and wait until its runner is claiming jobs (or it died, or the ready
        timeout passed), so that a started `serve` runs jobs as the inline worker did."""
        # The child inherits stdout/stderr (one log stream) and the write end of the ready
        # pipe, no other descriptor: the listening socket is close-on-exec, asyncio closes the
        # rest.
        ready_read, ready_write = os.pipe()
        try:
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *self._argv,
                    "--ready-fd",
                    str(ready_write),
                    env=self._env,
                    stdin=asyncio.subprocess.DEVNULL,
                    pass_fds=(ready_write,),
                )
            finally:
                os.close(ready_write)
            self._started_at = time.monotonic()
            # At once, not only when the child gets to its own setting: its imports and
            # start-up (a second or two of CPU) are job-side work as well.
            with suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, self._process.pid, self._nice)
            await self._wait_readable(ready_read)  # a line when ready; end of file if it died
        finally:
            os.close(ready_read)
        log.info("started worker process %d (nice %d)", self._process.pid, self._nice)

    @staticmethod
    async def _wait_readable(fd: int) -> None:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def woken() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, woken)
        try:
            await asyncio.wait_for(readable, READY_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("the worker process is not ready after %ss", READY_TIMEOUT_SECONDS)
        finally:
            loop.remove_reader(fd)

    async def _supervise(self) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            assert self._process is not None
            code = await self._process.wait()
            if time.monotonic() - self._started_at > STABLE_SECONDS:
                backoff = FIRST_BACKOFF_SECONDS
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            log.warning(
                "worker process %d died (%s); starting another in %.1f s",
                self._process.pid,
                how,
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            await self._spawn()

    async def stop(self) -> None:
        """SIGTERM to the child, which stops claiming, lets running jobs finish within its grace
        and releases the rest; SIGKILL if it is still there after the grace and a margin."""
        if self._supervisor is not None:
            self._supervisor.cancel()  # no restart from here on
            with suppress(asyncio.CancelledError):
                await self._supervisor
        process = self._process
        if process is None or process.returncode is not None:
            return
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self._stop_timeout)
        except TimeoutError:
            log.warning("worker process %d did not stop in time; killing it", process.pid)
            with suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def tie_to_parent(parent_pid: int) -> None:
    """Die with `parent_pid`, the `serve` that started this worker: the kernel sends SIGKILL
    when the parent exits (Linux's PR_SET_PDEATHSIG; elsewhere `watch_parent` polls).

    SIGKILL rather than a graceful stop: a parent that died without stopping its child died
    hard (kill -9, the OOM killer), and the pair then behaves as the single process it stands
    for: its jobs' leases expire and other replicas retry them. An orphan that went on running
    jobs would do so with no one to restart or stop it."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    # The parent may have died before the line above took effect: then we were re-parented.
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)


def lower_priority(nice: int) -> None:
    """Run at niceness `nice` at least (never raising the priority: that needs privileges)."""
    if nice > os.getpriority(os.PRIO_PROCESS, 0):
        os.setpriority(os.PRIO_PROCESS, 0, nice)


async def watch_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Where PR_SET_PDEATHSIG does not exist: notice the re-parenting within `interval`."""
    while True:
        await asyncio.sleep(interval)
        if os.getppid() != parent_pid:
            log.error("the serve process %d is gone; this worker exits with it", parent_pid)
            os.kill(os.getpid(), signal.SIGKILL)
