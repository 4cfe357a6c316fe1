"""Start N ranks of ``gsmt_fast.cli.main`` as forked processes, each with the environment torchrun gives its workers
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, OMP_NUM_THREADS=1), and, like torchrun, kill the other
ranks as soon as one fails.

Forking the test process (torch already imported) instead of spawning saves each rank the seconds of importing torch;
the ranks set one intra-op thread before running anything, as torchrun's OMP_NUM_THREADS=1 does.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(argv: list[str], rank: int, world_size: int, port: int, env: dict, log_path: str,
               torchrun: bool) -> None:
    code = 1
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives until os._exit
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        if torchrun:
            os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        os.environ.update({"OMP_NUM_THREADS": "1", **env})
        import torch

        torch.set_num_threads(1)
        from gsmt_fast.cli import main

        code = main(argv)
    except BaseException:  # noqa: BLE001 - report whatever ended the rank
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # no pytest teardown in the child


def run_ranks(argv: list[str], world_size: int, log_dir: Path, env: dict | None = None, torchrun: bool = True,
              timeout_s: float = 180.0) -> tuple[list[int], list[str]]:
    """Run the ranks to the end; returns (exit codes, negative for a signal, as multiprocessing reports them; logs).

    When a rank exits with an error the others are SIGKILLed, as torchrun's agent stops a failed group.
    ``torchrun=False``: plain processes (no torchrun variables), e.g. one ``--shard i/n`` run at one thread."""
    ctx = multiprocessing.get_context("fork")
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = [log_dir / f"rank{r}.log" for r in range(world_size)]
    procs = [ctx.Process(target=_rank_main,
                         args=(list(argv), r, world_size, port, dict(env or {}), str(logs[r]), torchrun))
             for r in range(world_size)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout_s
    timed_out = False
    while any(p.is_alive() for p in procs):
        timed_out = timed_out or time.monotonic() > deadline
        if timed_out or any(p.exitcode not in (None, 0) for p in procs):
            for p in procs:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGKILL)
        time.sleep(0.02)
    for p in procs:
        p.join()
    if timed_out:
        raise TimeoutError(f"ranks did not finish within {timeout_s} s; logs in {log_dir}")
    return [p.exitcode for p in procs], [path.read_text() for path in logs]
