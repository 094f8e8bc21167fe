"""Servers started for a test run end with the process that started them, even when it is killed
(a test run stopped hard left three Kafka JVMs and two PostgreSQL servers behind).

util-linux's `setpriv` sets the parent-death signal in the child just before it execs the server:
no Python runs between fork and exec (a `preexec_fn` can deadlock in a process with threads, as
ours has). Linux sends the signal when the *thread* that started the child exits, so servers are
started from the main thread (pytest's fixtures, the benchmark)."""

from __future__ import annotations

import shutil


def dying_with_parent(command: list[str], user: str | None = None) -> list[str]:
    """`command`, run as `user` if given, killed (SIGKILL) when its parent goes."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:  # not Linux's util-linux: the server outlives a killed run
        if user is not None:
            raise RuntimeError(f"running a server as {user} needs setpriv (util-linux)")
        return command
    as_user = ["--reuid", user, "--regid", user, "--init-groups"] if user else []
    return [setpriv, *as_user, "--pdeathsig", "KILL", "--", *command]
