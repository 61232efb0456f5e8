"""The agent daemon: serves protocol requests, one session per channel.

Runs on the device with numpy, msgpack and one engine. It stores artifacts, runs the timing
loop with its own monotonic clock and streams raw samples back; statistics happen on the host.
"""
from __future__ import annotations

import contextlib
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

import edgert
from edgert.backends import BackendOptions, available_backends
from edgert.device_agents import protocol
from edgert.device_agents.channel import Channel
from edgert.device_agents.store import ArtifactStore
from edgert.device_agents.transports import TransportClosed, TransportTimeout
from edgert import device_facts
from edgert.errors import EdgertError, InternalError, ProtocolError, UsageError
from edgert import run_metadata
from edgert.runner import prepared_session, run_benchmark
from edgert.settings import BenchSettings

HEARTBEAT_S = 2.0  # while a request runs, the host hears from us at least this often
PROGRESS_S = 0.5
MEASUREMENTS = frozenset({"bench.run", "bench.interleaved", "model.run", "sweep.run", "tvm.time", "lut.run"})

Handler = Callable[[dict[str, Any], Callable[[Any], None]], Any]


class _Heartbeat:
    """Sends heartbeats from a thread while a long request runs, so the host can tell busy from dead."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._channel.send(protocol.heartbeat(), timeout=HEARTBEAT_S)
            except EdgertError:
                return

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Agent:
    """Request handlers over an artifact store; one instance serves any number of sessions,
concurrently on TCP (the store locks itself, measurements take turns)."""

    def __init__(self, store: ArtifactStore, sysfs_root: str = "/", emulated: bool = False,
                 allowed_meters: tuple[str, ...] = ()) -> None:
        """``sysfs_root`` and ``allowed_meters`` are the device's trust boundaries, fixed by
        whoever starts the agent: a request naming another root or meter is refused."""
        self.store = store
        self.sysfs_root = sysfs_root
        self.allowed_meters = tuple(allowed_meters)
        self.emulated = emulated
        self._measuring = threading.Lock()
        self.handlers: dict[str, Handler] = {
            "session.open": self._session_open,
            "ping": lambda params, progress: {"monotonic_ns": time.monotonic_ns()},
            "device.info": self._device_info,
            "store.status": self._store_status,
            "store.put": self._store_put,
            "store.finish": self._store_finish,
            "bench.run": self._bench_run,
            "bench.interleaved": self._bench_interleaved,
            "model.run": self._model_run,
            protocol.ARTIFACT_RUN: self._artifact_run,
            "sweep.run": self._sweep_run,
            "tvm.time": self._tvm_time,
            "lut.run": self._lut_run,
        }

    def capabilities(self) -> protocol.Capabilities:
        return protocol.Capabilities(engines=tuple(available_backends()),
                                     free_bytes=self.store.free_bytes(), arch=platform.machine(),
                                     emulated=self.emulated)

    # -- serving ---------------------------------------------------------------------------

    def serve(self, channel: Channel, idle_timeout: float | None = None) -> str:
        """Say hello, then answer requests until the session ends; returns why it ended.

        A session ends when the host sends ``session.close`` or nothing arrives for
        ``idle_timeout`` s; a closed stream raises ``TransportClosed``. Opened sessions are
        logged to stderr with how they ended, so an operator can follow who used the device.
        """
        channel.send(protocol.hello(edgert.__version__, self.capabilities()))
        opened = False
        reason = "the link closed"
        try:
            while True:
                try:
                    message = channel.recv(timeout=idle_timeout)
                except TransportTimeout:
                    reason = f"nothing received for {idle_timeout:g} s"
                    return reason
                except ProtocolError as exc:  # oversized or undecodable frame: say so and keep going
                    channel.send(protocol.error(None, exc))
                    continue
                if message["kind"] == "heartbeat":
                    continue
                if message["kind"] != "request":
                    channel.send(protocol.error(None, ProtocolError(
                        f"the agent only accepts requests, got a {message['kind']!r} message")))
                    continue
                if message["method"] == "session.close":
                    reason = "closed by the host"  # even if the answer no longer reaches it
                    channel.send(protocol.response(message["id"], {"closed": True}))
                    return reason
                self.handle(channel, message)
                if message["method"] == "session.open" and not opened:
                    opened = True
                    log(f"session opened on {channel.transport.name}")
        except TransportClosed as exc:
            if reason != "closed by the host":
                reason = "a new host took over the link" if exc.fields.get("peer_restarted") else exc.message
            raise
        finally:
            if opened:
                log(f"session on {channel.transport.name} ended: {reason}")

    def handle(self, channel: Channel, message: dict[str, Any]) -> None:
        request_id, method = message["id"], message["method"]
        handler = self.handlers.get(method)
        if handler is None:
            channel.send(protocol.error(request_id, ProtocolError(
                f"unknown request {method!r}; this agent knows: {', '.join(sorted(self.handlers))}",
                method=method)))
            return
        last = [0.0]

        def progress(data: Any) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_S:
                last[0] = now
                channel.send(protocol.progress(request_id, data))

        try:
            with _Heartbeat(channel), self._exclusive(method):
                result = handler(message["params"], progress)
        except TransportClosed:
            raise  # the link is gone or has a new host: nobody to answer (the caller starts over)
        except EdgertError as exc:
            channel.send(protocol.error(request_id, exc))
        except Exception as exc:  # a bug must not take the agent down; report it to the host
            channel.send(protocol.error(request_id, InternalError(
                f"agent failed on {method}: {type(exc).__name__}: {exc}", method=method)))
        else:
            channel.send(protocol.response(request_id, result))

    @contextlib.contextmanager
    def _exclusive(self, method: str) -> Iterator[None]:
        """Measurements run one at a time (two would disturb each other's timings and DVFS
        settings); a second one waits here, its host kept alive by the heartbeats."""
        if method not in MEASUREMENTS:
            yield
            return
        with self._measuring:
            yield

    # -- handlers --------------------------------------------------------------------------

    def _session_open(self, params: dict[str, Any], progress: Any) -> dict[str, Any]:
        protocol.check_version(int(params.get("protocol", -1)), str(params.get("edgert_version", "?")))
        return {"agent_version": edgert.__version__}

    def _device_info(self, params: dict[str, Any], progress: Any) -> dict[str, Any]:
        from edgert.device_agents.discovery import discover

        root = self._own_root(params)
        return {"device": self._facts(params.get("transport", "agent")), **discover(root), "sysfs_root": root}

    def _own_root(self, params: dict[str, Any]) -> str:
        """The agent's sysfs root. The write allow-list applies under it, so a host naming
        another one (e.g. a tree it uploaded) is refused rather than followed."""
        asked = params.get("sysfs_root")
        if asked and os.path.realpath(str(asked)) != os.path.realpath(self.sysfs_root):
            raise UsageError(f"this agent reads and writes sysfs under {self.sysfs_root} (its --sysfs-root); "
                             f"a host may not choose another root ({asked!r})", sysfs_root=str(asked))
        return self.sysfs_root

    def _check_meter(self, params: dict[str, Any]) -> None:
        """A power-meter URL makes the device open a port: only those its operator allowed."""
        power = str(params.get("power") or "auto")
        if power.startswith("meter+") and power not in self.allowed_meters:
            allowed = ", ".join(self.allowed_meters) or "none"
            raise UsageError(f"this agent does not allow the power meter {power!r} (allowed: {allowed}); "
                             f"start it with --allow-meter {power} to use it", meter=power)

    def _facts(self, transport: str) -> dict[str, Any]:
        facts = device_facts.collect(transport)
        facts["emulated"] = self.emulated
        return facts

    def _store_status(self, params: dict[str, Any], progress: Any) -> dict[str, Any]:
        complete, received = self.store.have(_sha(params))
        return {"complete": complete, "received": received}

    def _store_put(self, params: dict[str, Any], progress: Any) -> dict[str, Any]:
        received = self.store.write_chunk(_sha(params), int(_param(params, "offset")),
                                          _param(params, "data"), int(_param(params, "size")))
        return {"received": received}

    def _store_finish(self, params: dict[str, Any], progress: Any) -> dict[str, Any]:
        self.store.finish(_sha(params))
        return {"complete": True}

    def _artifact(self, params: dict[str, Any]) -> Path:
        """The stored file, named with the model's suffix when given (engines dispatch on it)."""
        sha, suffix = _sha(params), str(params.get("suffix", ""))
        return self.store.named_path(sha, suffix) if suffix else self.store.path(sha)

    def _bench_run(self, params: dict[str, Any], progress: Callable[[Any], None]) -> dict[str, Any]:
        model = self._artifact(params)
        settings = BenchSettings.from_dict(_param(params, "settings"))
        options = BackendOptions(threads=settings.threads, target=params.get("target", "host"))
        feeds = {k: protocol.unpack_array(v) for k, v in (params.get("feeds") or {}).items()}
        measured = run_metadata.around(lambda: run_benchmark(
            model, _param(params, "backend"), settings, options=options,
            dims=params.get("dims") or {}, feeds=feeds,
            progress=lambda n, ms: progress({"runs": n, "elapsed_ms": ms}),
            cases=[(str(name), {k: protocol.unpack_array(v) for k, v in case.items()})
                   for name, case in params.get("cases") or []]))
        raw = measured["raw"]
        for key in ("samples_ns", "starts_ns", "warmup_ns"):
            raw[key] = protocol.pack_array(np.asarray(raw[key], dtype=np.int64))
        measured["first_outputs"] = [protocol.pack_array(o) for o in measured["first_outputs"]]
        measured["device"] = self._facts(params.get("transport", "agent"))
        return measured

    def _bench_interleaved(self, params: dict[str, Any], progress: Callable[[Any], None]) -> dict[str, Any]:
        """Time several stored artifacts in alternating blocks (``interleave``), in one request."""
        from edgert.device_agents.interleave import Contender, run_interleaved

        contenders = [Contender(str(_param(a, "name")), self._artifact(a), str(_param(a, "backend")))
                      for a in _param(params, "artifacts")]
        settings = BenchSettings.from_dict(_param(params, "settings"))
        measured = run_metadata.around(lambda: run_interleaved(
            contenders, [str(n) for n in _param(params, "order")], int(_param(params, "block_runs")),
            settings, [{k: protocol.unpack_array(v) for k, v in case.items()}
                       for case in params.get("cases") or []],
            BackendOptions(threads=settings.threads, target=params.get("target", "host")),
            lambda n, ms: progress({"runs": n, "elapsed_ms": ms})))
        for raw in measured["raw"].values():
            for key in ("samples_ns", "starts_ns", "warmup_ns", "blocks", "cases"):
                raw[key] = protocol.pack_array(np.asarray(raw[key], dtype=np.int64))
        measured["first_outputs"] = {name: [protocol.pack_array(o) for o in outs]
                                     for name, outs in measured["first_outputs"].items()}
        measured["device"] = self._facts(params.get("transport", "agent"))
        return measured

    def _model_run(self, params: dict[str, Any], progress: Any) -> dict[str, Any]:
        """Run a model or bundle once on given inputs (differential tests against the host)."""
        model = self._artifact(params)
        feeds = {k: np.array(protocol.unpack_array(v)) for k, v in _param(params, "feeds").items()}
        options = BackendOptions(target=params.get("target", "host"))
        with prepared_session(model, _param(params, "backend"), BenchSettings(), options=options,
                              feeds=feeds) as (_, session, all_feeds):
            outputs = session.run(all_feeds)
        return {"outputs": [protocol.pack_array(np.asarray(o)) for o in outputs]}

    def _artifact_run(self, params: dict[str, Any], progress: Any) -> dict[str, Any]:
        """Run a stored model or bundle on each input case: outputs and the path taken.

        Stops early (``done``) once the outputs would not fit in one frame; the host resends
        the rest. One case whose outputs alone do not fit is an error.
        """
        from edgert.execute import run_cases

        cases = protocol.artifact_run_cases(params)
        records = run_cases(self._artifact(params), str(_param(params, "backend")), cases,
                            target=str(params.get("target", "host")))
        done, size = 0, 0
        for record in records:
            size += protocol.array_bytes(record.get("outputs", []))
            if size > protocol.CASES_BUDGET_BYTES:
                break
            done += 1
        if not done and records:
            raise UsageError(f"the outputs of one input case are {size} bytes, above the "
                             f"{protocol.CASES_BUDGET_BYTES}-byte budget of a protocol frame",
                             size=size, limit=protocol.CASES_BUDGET_BYTES)
        return protocol.artifact_run_result(records[:done], done)

    def _sweep_run(self, params: dict[str, Any], progress: Callable[[Any], None]) -> dict[str, Any]:
        from edgert.device_agents.sweep import serve_request

        return self._measure_on_own_root(serve_request, params, progress)

    def _lut_run(self, params: dict[str, Any], progress: Callable[[Any], None]) -> dict[str, Any]:
        """Time an All-in-One file's blocks and whole networks at each setting (``edgert lut``)."""
        from edgert.variants.lut_run import serve_request

        return self._measure_on_own_root(serve_request, params, progress)

    def _measure_on_own_root(self, serve_request: Callable[..., dict[str, Any]], params: dict[str, Any],
                             progress: Callable[[Any], None]) -> dict[str, Any]:
        """Run a clock-setting measurement on this agent's own sysfs root and allowed meters (never
        ones the host names), and add the device facts to its result."""
        asked = params.get("request") if isinstance(params.get("request"), dict) else {}
        self._check_meter(asked)
        result = serve_request(params, self._artifact(params), self._own_root(asked), progress)
        result["device"] = self._facts(params.get("transport", "agent"))
        return result

    def _tvm_time(self, params: dict[str, Any], progress: Any) -> dict[str, Any]:
        """Time one TVM tuning candidate built on the host (MetaSchedule's runner, on the device)."""
        from edgert.device_agents.tvm_timer import serve_request

        return serve_request(params, self._artifact(params))


def _param(params: dict[str, Any], key: str) -> Any:
    if key not in params:
        raise ProtocolError(f"the request lacks {key!r}", key=key)
    return params[key]


def _sha(params: dict[str, Any]) -> str:
    sha = params.get("sha256")
    if not isinstance(sha, str):
        raise UsageError("request lacks the artifact's sha256")
    return sha


def log(line: str) -> None:
    """One line to the agent's stderr (journald or the terminal it runs in)."""
    sys.stderr.write(f"edgert agent: {line}\n")
    sys.stderr.flush()


def default_store_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "edgert" / "store"


def start_agent(store_dir: Path | None = None, quota_bytes: int = 2048 << 20, sysfs_root: str = "/",
                emulated: bool = False, allowed_meters: tuple[str, ...] = ()) -> Agent:
    """An agent ready to serve. A sweep that crashed may have left clocks pinned: its DVFS
    journal is replayed (and the restore logged) before anything else runs, unless a sweep of
    another agent process holds it right now (then it is that sweep's to restore)."""
    from .dvfs import replay_if_idle
    from .sweep import journals

    _check_sysfs_root(sysfs_root)
    undone = sum(replay_if_idle(path) for path in journals())  # the emulated cgroup's too
    if undone:
        log(f"restored {undone} DVFS setting(s) left by a crashed sweep")
    store = ArtifactStore(store_dir or default_store_dir(), quota_bytes=quota_bytes)
    return Agent(store, sysfs_root=sysfs_root, emulated=emulated, allowed_meters=allowed_meters)


def _check_sysfs_root(sysfs_root: str) -> None:
    """Refuse a --sysfs-root that is no directory: the agent started and then reported every
    board (no CPUs, rails or clocks) as empty, silently."""
    root = Path(sysfs_root)
    if not root.exists():
        raise UsageError(f"--sysfs-root {sysfs_root} does not exist", path=sysfs_root)
    if not root.is_dir():
        raise UsageError(f"--sysfs-root {sysfs_root} is not a directory", path=sysfs_root)
