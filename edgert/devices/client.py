"""The host's side of an agent session: requests, resumable uploads, remote benchmarks."""
from __future__ import annotations

import collections
import contextlib
import itertools
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import edgert
from edgert import progress as live
from edgert.device_agents import protocol
from edgert.device_agents.channel import Channel
from edgert.device_agents.transports import TransportClosed, TransportTimeout
from edgert.errors import DeviceError, EdgertError, ModelError, UsageError, from_dict
from edgert.hashing import sha256_file

CHUNK_BYTES = 1 << 20  # with UPLOAD_WINDOW in flight: measured best over SSH (benchmarks/transport.py)
UPLOAD_WINDOW = 4
SERIAL_CHUNK_BYTES = 64 << 10  # ~6 s per chunk at 115200 baud, so progress and timeouts stay sane
GOODBYE_TIMEOUT_S = 5.0
SILENCE_TIMEOUT_S = 30.0  # the agent heartbeats every 2 s while busy; silence this long means dead
# An emulated board runs native code many times slower, and a native call that holds the GIL
# stops the heartbeat thread meanwhile: loading TVM's FFI library (import tvm_ffi) takes 33 s
# under qemu-aarch64 on a 2-core x86 host, so an emulated agent gets this much silence instead.
EMULATED_SILENCE_TIMEOUT_S = 180.0


class AgentClient:
    """One session with an agent over a ``Channel``; use as a context manager."""

    def __init__(self, channel: Channel, transport_name: str, *,
                 silence_timeout: float = SILENCE_TIMEOUT_S) -> None:
        self.channel = channel
        self.transport_name = transport_name  # "ssh", "serial", "tcp"
        self.silence_timeout = silence_timeout
        self.chunk_bytes = SERIAL_CHUNK_BYTES if transport_name == "serial" else CHUNK_BYTES
        self._on_close: list[Callable[[], None]] = []
        self._ids = itertools.count(1)
        self.capabilities = self._open_session()
        if self.capabilities.emulated:
            self.silence_timeout = max(silence_timeout, EMULATED_SILENCE_TIMEOUT_S)

    def _open_session(self) -> protocol.Capabilities:
        """Read the agent's hello and open a session.

        On a serial line the host speaks first: the link trusts only agent frames addressed to
        it, because a tty or a bridge (ser2net, socat) can hold hellos of earlier agent link
        epochs (device_agents/framing.py, "Link epochs"), so a heartbeat goes out before the
        hello is read. If the agent's link restarts before the session is open (its beacon gave
        up just as we came), the link reports it once and the handshake starts again with the
        new link's hello, until ``silence_timeout`` passes: nothing was opened yet.
        """
        deadline = time.monotonic() + self.silence_timeout
        while True:
            try:
                if self.transport_name == "serial":
                    self.channel.send(protocol.heartbeat(), timeout=self.silence_timeout)
                capabilities = protocol.check_hello(self.channel.recv(self.silence_timeout, opening=True))
                request_id = next(self._ids)
                self.channel.send(protocol.request(request_id, "session.open", {
                    "protocol": protocol.PROTOCOL_VERSION, "edgert_version": edgert.__version__}))
                self._wait(request_id, "session.open")
                return capabilities
            except (TransportClosed, DeviceError) as exc:
                if _link_restarted(exc) and time.monotonic() < deadline:
                    continue
                if isinstance(exc, DeviceError):
                    raise
                raise DeviceError(f"cannot open a session with the agent: {exc.message}") from exc
            except TransportTimeout as exc:
                raise DeviceError(f"the agent did not answer for {self.silence_timeout:.0f} s: "
                                  "it hung or the link is down") from exc

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # After an error or Ctrl-C the agent may still be busy: do not wait for its goodbye.
        self.close(goodbye=exc_type is None)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after the session closes (e.g. release a labgrid place)."""
        self._on_close.append(callback)

    def close(self, goodbye: bool = True) -> None:
        try:
            if goodbye:
                self._say_goodbye()
            self.channel.close()
        finally:
            while self._on_close:
                self._on_close.pop()()

    def _say_goodbye(self) -> None:
        """End the session on the agent's side too, so a serial agent greets the next host at once.

        Best effort and brief: a busy or vanished agent ends the session by itself (link
        takeover, idle timeout or the closed stream)."""
        deadline = time.monotonic() + GOODBYE_TIMEOUT_S
        try:
            request_id = next(self._ids)
            self.channel.send(protocol.request(request_id, "session.close"), timeout=GOODBYE_TIMEOUT_S)
            while (remaining := deadline - time.monotonic()) > 0:
                message = self.channel.recv(remaining)
                if message["kind"] in ("response", "error") and message["id"] == request_id:
                    return
        except EdgertError:
            return

    def _recv(self) -> dict[str, Any]:
        try:
            return self.channel.recv(self.silence_timeout)
        except TransportTimeout as exc:
            raise DeviceError(f"the agent sent nothing for {self.silence_timeout:.0f} s: "
                              "it hung or the link is down") from exc
        except TransportClosed as exc:
            raise DeviceError(f"the connection to the agent closed: {exc.message}") from exc

    def call(self, method: str, params: dict[str, Any] | None = None,
             on_progress: Callable[[Any], None] | None = None) -> Any:
        """Send one request and wait for its answer; progress and heartbeats keep it alive."""
        return self._wait(self._send(method, params), method, on_progress)

    def _send(self, method: str, params: dict[str, Any] | None) -> int:
        request_id = next(self._ids)
        try:
            self.channel.send(protocol.request(request_id, method, params))
        except (TransportClosed, TransportTimeout) as exc:
            raise DeviceError(f"cannot send {method} to the agent: {exc.message}") from exc
        return request_id

    def _wait(self, request_id: int, method: str,
              on_progress: Callable[[Any], None] | None = None) -> Any:
        while True:
            message = self._recv()
            kind = message["kind"]
            if kind == "heartbeat":
                continue
            if kind == "progress" and message["id"] == request_id:
                if on_progress is not None:
                    on_progress(message["data"])
                continue
            if kind == "error" and message["id"] in (request_id, None):
                raise from_dict(message["error"])
            if kind == "response" and message["id"] == request_id:
                return message["result"]
            if kind in ("response", "error", "progress") and message["id"] < request_id:
                continue  # the late answer to a request we already gave up on
            raise DeviceError(f"unexpected {kind} message from the agent while waiting for {method}")

    def upload(self, path: Path, on_progress: Callable[[int, int], None] | None = None) -> str:
        """Make ``path`` present in the agent's store; send only what it lacks. Returns its sha256."""
        _check_not_empty(path)
        if path.suffix == ".onnx":
            from edgert.artifacts import refuse_weights_beside

            refuse_weights_beside(path)
        sha = sha256_file(path)
        status = self.call("store.status", {"sha256": sha})
        if status["complete"]:
            return sha
        size = path.stat().st_size
        offset = int(status["received"])
        in_flight: collections.deque[int] = collections.deque()
        shown, close_shown = live.transfer(f"upload {path.name}", size, start=offset)
        with contextlib.ExitStack() as stack, open(path, "rb") as fh:
            stack.callback(close_shown)
            fh.seek(offset)
            while offset < size or in_flight:
                # keep UPLOAD_WINDOW chunks in flight: the agent stores one while the next arrives
                while offset < size and len(in_flight) < UPLOAD_WINDOW:
                    data = fh.read(self.chunk_bytes)
                    in_flight.append(self._send("store.put", {"sha256": sha, "offset": offset,
                                                              "size": size, "data": data}))
                    offset += len(data)
                done = int(self._wait(in_flight.popleft(), "store.put")["received"])
                shown(done)
                if on_progress is not None:
                    on_progress(done, size)
        self.call("store.finish", {"sha256": sha, "size": size})
        return sha

    def link_summary(self) -> str | None:
        """How hard a serial link had to work (damaged frames, measured error rate, resends);
        None on other transports or when nothing was damaged."""
        stats = getattr(self.channel.transport, "stats", None)
        if stats is None or not (stats.bad_frames or stats.retransmissions):
            return None
        return stats.summary()

    def device_info(self, sysfs_root: str | None = None) -> dict[str, Any]:
        return self.call("device.info", {"sysfs_root": sysfs_root, "transport": self.transport_name})

    def bench(self, model: Path, backend: str, params: dict[str, Any],
              progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
        """Upload (once) and measure on the device; returns ``runner.run_benchmark``'s raw dict."""
        sha = self.upload(model)
        on_progress = (lambda d: progress(d["runs"], d["elapsed_ms"])) if progress else None
        measured = self.call("bench.run", {"sha256": sha, "suffix": model.suffix, "backend": backend,
                                           "transport": self.transport_name, **params}, on_progress)
        raw = measured["raw"]
        for key in ("samples_ns", "starts_ns", "warmup_ns"):
            raw[key] = protocol.unpack_array(raw[key]).tolist()
        measured["first_outputs"] = [protocol.unpack_array(o) for o in measured["first_outputs"]]
        return measured

    def bench_interleaved(self, models: dict[str, tuple[Path, str]], order: list[str], block_runs: int,
                          params: dict[str, Any],
                          progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
        """Upload (once) each ``name -> (file, backend)`` and time them in one request, in
        blocks of ``block_runs`` runs in ``order`` (``device_agents.interleave``)."""
        artifacts = [{"name": name, "sha256": self.upload(path), "suffix": path.suffix, "backend": backend}
                     for name, (path, backend) in models.items()]
        on_progress = (lambda d: progress(d["runs"], d["elapsed_ms"])) if progress else None
        measured = self.call("bench.interleaved", {"artifacts": artifacts, "order": order,
                                                   "block_runs": block_runs,
                                                   "transport": self.transport_name, **params}, on_progress)
        for raw in measured["raw"].values():
            for key in ("samples_ns", "starts_ns", "warmup_ns", "blocks", "cases"):
                raw[key] = protocol.unpack_array(raw[key]).tolist()
        measured["first_outputs"] = {name: [protocol.unpack_array(o) for o in outs]
                                     for name, outs in measured["first_outputs"].items()}
        return measured

    def run_model(self, model: Path, backend: str, feeds: dict[str, np.ndarray],
                  target: str = "host") -> list[np.ndarray]:
        """Run a model once on the device and bring the outputs back."""
        sha = self.upload(model)
        reply = self.call("model.run", {"sha256": sha, "suffix": model.suffix, "backend": backend,
                                        "target": target,
                                        "feeds": {k: protocol.pack_array(v) for k, v in feeds.items()}})
        return [np.array(protocol.unpack_array(o)) for o in reply["outputs"]]

    def run_cases(self, model: Path, backend: str, cases: list[dict[str, np.ndarray]],
                  target: str = "host") -> list[dict[str, Any]]:
        """``edgert.execute.run_cases`` on the device: one record per case (outputs, the path
        a bundle took, or the error it gave), in as few artifact.run requests as fit a frame."""
        sha = self.upload(model)
        records: list[dict[str, Any]] = []
        while len(records) < len(cases):
            batch = _batch(cases, len(records))
            result = self.call(protocol.ARTIFACT_RUN, protocol.artifact_run_params(
                sha, model.suffix, backend, batch, target))
            done, got = protocol.read_artifact_run_result(result)
            if done < 1:
                raise DeviceError("the agent returned no outputs for artifact.run")
            records += got
        return records


def _check_not_empty(path: Path) -> None:
    """Refuse a 0-byte file before uploading: no chunk is sent for it, so the agent had no
    upload to finish and said so with a cryptic artifact id."""
    try:
        empty = path.stat().st_size == 0
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}", path=str(path)) from exc
    if empty:
        raise ModelError(f"{path} is empty (0 bytes): not a model", path=str(path))


def _batch(cases: list[dict[str, np.ndarray]], start: int) -> list[dict[str, np.ndarray]]:
    """Cases from ``start`` whose inputs fit the frame budget together (at least one)."""
    size, end = 0, start
    while end < len(cases):
        size += protocol.array_bytes(cases[end])
        if size > protocol.CASES_BUDGET_BYTES:
            break
        end += 1
    if end == start:
        raise UsageError(f"input case {start} is {protocol.array_bytes(cases[start])} bytes, above "
                         f"the {protocol.CASES_BUDGET_BYTES}-byte budget of one protocol frame",
                         case=start)
    return cases[start:end]


def _link_restarted(exc: EdgertError) -> bool:
    """Whether ``exc`` is, or was raised from, the link reporting that the peer restarted."""
    cause = exc if isinstance(exc, TransportClosed) else exc.__cause__
    return isinstance(cause, TransportClosed) and bool(cause.fields.get("peer_restarted"))
