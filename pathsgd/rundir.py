"""A run's directory: what a run writes, and the rules that keep those records whole.

:class:`RunDir` owns everything in the directory of one run:

- the lock (``.lock``): one process trains in a directory at a time;
- ``checkpoint.pt``: model, optimizer and RNG states, the rows so far; what ``resume=true`` continues from, after
  checking that it was made by the same configuration;
- ``metrics.csv``: one row per epoch, rewritten whole after each checkpoint;
- ``summary.json``: status and final metrics, rewritten at each epoch;
- signals: while it holds the directory, SIGTERM ends the run as Ctrl-C does (status ``interrupted``), and either
  signal that arrives while an epoch's records are being written waits until all three are written.

Every file is written atomically (:mod:`pathsgd.atomic`): a kill at any moment leaves the previous version.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pathsgd.atomic import atomic_write_json, load_checkpoint, save_checkpoint
from pathsgd.config import RESUME_MAY_CHANGE, ConfigError, flatten, in_groups
from pathsgd.sinks import CSVSink

__all__ = ["RunDir", "CHECKPOINT_NAME", "source_commit"]

CHECKPOINT_NAME = "checkpoint.pt"

log = logging.getLogger("pathsgd.train")

# Whether an epoch's records are being written, and a signal held back until they are.
_PENDING_SIGNAL: dict[str, Any] = {"writing": False, "signum": None, "stopping": False}


class RunDir:
    """The directory of one run (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.checkpoint_path = self.path / CHECKPOINT_NAME
        self.metrics = CSVSink(self.path / "metrics.csv")

    @contextlib.contextmanager
    def hold(self) -> Iterator[RunDir]:
        """The lock, and SIGTERM read as an interrupt, for as long as a run trains here."""
        with _sigterm_as_interrupt(), _lock(self.path):
            yield self

    def resume_state(self, c: Mapping[str, Any]) -> dict[str, Any] | None:
        """The checkpoint to continue from when ``resume=true`` asks for one and there is one, checked against
        the config ``c``; None for a fresh start. Says what happens either way."""
        if not c["resume"]:
            if self.checkpoint_path.is_file() and not c["overwrite"]:  # a finished run is a result: kept unless told
                raise ConfigError(f"{self.path} already holds a run: resume=true continues it (or extends it with more "
                                  "epochs), overwrite=true starts afresh over it")
            if self.checkpoint_path.is_file():
                log.warning("%s already holds a run; starting afresh over it (overwrite=true)", self.path)
            return None
        if not self.checkpoint_path.is_file():
            log.info("no checkpoint in %s yet: a fresh start", self.path)  # what resume=true in a sweep expects
            return None
        try:
            state = load_checkpoint(self.checkpoint_path)
            _ = state["config"], state["model"], state["optimizer"], state["rows"], state["rng"], state["epoch"]
        except Exception as err:  # noqa: BLE001 - truncated, garbage, or not ours: one line, never weights_only=False
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"{self.checkpoint_path} cannot be resumed: it is truncated, corrupt or not a checkpoint "
                              f"of this runner ({reason[:120]}). Run again with overwrite=true to start afresh "
                              "over it, or restore the file from a copy.") from None
        self._check_resumable(state["config"], c)
        return state

    def _check_resumable(self, saved: Mapping[str, Any], now: Mapping[str, Any]) -> None:
        a, b = flatten(saved), flatten(now)
        diffs = [f"{k}={a.get(k)!r} there, {b.get(k)!r} now" for k in sorted(set(a) | set(b))
                 if not in_groups(k, RESUME_MAY_CHANGE) and a.get(k) != b.get(k)]
        if diffs:
            raise ConfigError(f"resume=true, but the checkpoint in {self.path} was made with a different configuration: "
                              f"{'; '.join(diffs)}. Use the same configuration, another run directory "
                              "(hydra.run.dir=...), or resume=false.")
        if a.get("speed.capture") != b.get("speed.capture"):
            log.warning("resuming %s with speed.capture=%r (was %r) from here on", self.path, b.get("speed.capture"),
                        a.get("speed.capture"))

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        save_checkpoint(self.checkpoint_path, state)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        self.metrics.write(rows)

    def write_summary(self, record: Mapping[str, Any]) -> None:
        atomic_write_json(self.path / "summary.json", record)

    @staticmethod
    @contextlib.contextmanager
    def writing_whole() -> Iterator[None]:
        """Hold back an interrupt until one epoch is in the checkpoint, ``metrics.csv`` and ``summary.json``
        alike: an interrupt between two of those writes would leave them naming different epochs."""
        _PENDING_SIGNAL["writing"] = True
        try:
            yield
        finally:
            _PENDING_SIGNAL["writing"] = False
        if _PENDING_SIGNAL["signum"] is not None:
            signum, _PENDING_SIGNAL["signum"] = _PENDING_SIGNAL["signum"], None
            _PENDING_SIGNAL["stopping"] = True
            raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a cluster's time limit) ends a run as Ctrl-C does: status ``interrupted``, its last
    finished epoch kept in every record; held back while an epoch's records are written (``writing_whole``)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return

    def interrupt(signum, frame):
        if _PENDING_SIGNAL["stopping"]:
            return  # a second signal (a process group signalled, Ctrl-C twice): the records are being finished
        if _PENDING_SIGNAL["writing"]:
            _PENDING_SIGNAL["signum"] = signum
        else:
            _PENDING_SIGNAL["stopping"] = True
            raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    _PENDING_SIGNAL["stopping"] = False
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _PENDING_SIGNAL["stopping"] = False


def _lock(run_dir: Path):
    """An exclusive lock on ``run_dir`` while a run trains in it: a second process gets a clear error, not a race
    in which the last writer wins. The operating system releases it when the process ends, however it ends."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+")
    try:
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # no fcntl (Windows): no lock
        pass
    except OSError:
        handle.close()
        raise ConfigError(f"{run_dir} is in use: another run is training in it now. Wait for it, or give this run "
                          "another directory (hydra.run.dir=...)") from None
    return handle


def source_commit(repo: Path = Path(__file__).resolve().parents[1]) -> str | None:
    """The commit of the code that writes a record, ``-dirty`` when tracked files outside ``results/`` differ from it
    (the studies' own outputs, and untracked files such as a data link, change no code); None outside a checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
                               cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "") if head.returncode == 0 else None
