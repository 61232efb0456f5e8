"""Boards in a labgrid farm: acquire a place, reach its board, release the place afterwards.

    labgrid://PLACE                 the place named PLACE (exact name)
    labgrid://?board=pi5&rack=a     places whose tags include every KEY=VALUE given

The coordinator is ``--lg-coordinator`` (the address's ``coordinator``), else ``$LG_COORDINATOR``,
else labgrid's default ``127.0.0.1:20408``. A single run through a tag selector takes the first
idle matching place (by name); a fleet run (``edgert.fleet``) expands it into every matching place.

The board is reached through the place's exported ``NetworkService`` (SSH: its address, port and
username; keys, known_hosts and the agent command come from the address, as for ``ssh://``),
else through a ``NetworkSerialPort`` (RFC 2217 or raw TCP, on which ``edgert agent --serial``
must already be listening). A ``NetworkService`` that labgrid marks as reachable only through
the exporter host (``proxy_required``, isolated exporters) is refused with that reason.

labgrid's Python client (``labgrid.remote.client.start_session``, the API labgrid's own
``RemotePlace`` resource uses) rather than ``labgrid-client`` subprocesses: it gives places,
tags and resource arguments as data instead of text to parse, and gRPC errors as exceptions.
Each step opens its own short session, so no gRPC stream sits undriven during a long benchmark
and a release still works after the acquiring session broke.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from typing import Any, Iterator

from edgert.devices.address import DeviceAddress, LabgridAddress
from edgert.devices.address import parse_labgrid_url as parse_url  # noqa: F401 (labgrid.parse_url, as before)
from edgert.errors import DeviceError

DEFAULT_COORDINATOR = "127.0.0.1:20408"  # labgrid-client's own default


def coordinator_address(addr: LabgridAddress) -> str:
    return addr.coordinator or os.environ.get("LG_COORDINATOR") or DEFAULT_COORDINATOR


@contextlib.contextmanager
def _session(coordinator: str) -> Iterator[Any]:
    """A labgrid ``ClientSession`` with its own event loop, synced with the coordinator."""
    try:
        import asyncio

        from labgrid.remote.client import Error as LabgridError, start_session
    except ImportError as exc:
        raise DeviceError("labgrid devices need labgrid: pip install 'edgert[labgrid]'") from exc
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # grpc.aio binds its channel to the current thread's loop
    try:
        try:
            session = start_session(coordinator, loop=loop)
        except (LabgridError, OSError) as exc:
            raise DeviceError(f"cannot reach the labgrid coordinator at {coordinator}: {exc}; "
                              "check --lg-coordinator or LG_COORDINATOR",
                              coordinator=coordinator) from exc
        try:
            yield session
        finally:
            loop.run_until_complete(session.stop())
            loop.run_until_complete(session.close())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _call(session: Any, request: Any, what: str, place: str) -> None:
    """One coordinator request, then wait until our view of the places reflects it."""
    import grpc

    try:
        session.loop.run_until_complete(request)
    except grpc.aio.AioRpcError as exc:
        raise DeviceError(f"labgrid could not {what} place {place}: {exc.details()}",
                          place=place) from exc
    if not session.loop.run_until_complete(session.sync_with_coordinator()):
        raise DeviceError(f"the labgrid coordinator went away while trying to {what} place {place}",
                          place=place)


def _matching(session: Any, addr: LabgridAddress) -> list[Any]:
    """Places named by ``addr`` (exactly one, or every one carrying all its tags), by name."""
    if addr.place:
        if addr.place not in session.places:
            known = ", ".join(sorted(session.places)) or "none"
            raise DeviceError(f"the labgrid coordinator has no place {addr.place!r}; places: {known}",
                              place=addr.place)
        return [session.places[addr.place]]
    wanted = dict(addr.tags)
    found = [p for _, p in sorted(session.places.items())
             if all(p.tags.get(k) == v for k, v in wanted.items())]
    if not found:
        raise DeviceError(f"no labgrid place has the tags {_tags(addr)}", tags=wanted)
    return found


def _tags(addr: LabgridAddress) -> str:
    return "&".join(f"{k}={v}" for k, v in addr.tags)


def expand(addr: LabgridAddress) -> list[LabgridAddress]:
    """A tag selector -> one address per matching place (for fleets); a place name -> itself."""
    if addr.place:
        return [addr]
    with _session(coordinator_address(addr)) as session:
        places = _matching(session, addr)
    return [dataclasses.replace(addr, name=f"labgrid://{p.name}", place=p.name, tags=())
            for p in places]


def _acquire(session: Any, addr: LabgridAddress) -> str:
    """Acquire the place (or the first idle place matching the tags); returns its name."""
    from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

    candidates = _matching(session, addr)
    idle = [p for p in candidates if not p.acquired]
    if not idle:
        held = ", ".join(f"{p.name} by {p.acquired}" for p in candidates)
        what = f"every labgrid place with tags {_tags(addr)} is" if addr.tags else \
            f"labgrid place {addr.place} is"
        raise DeviceError(f"{what} already acquired ({held}); wait, or ask for a release",
                          place=addr.place)
    error: DeviceError | None = None
    for place in idle:  # a tag selector tries the next idle place after losing a race
        try:
            _call(session, session.stub.AcquirePlace(pb2.AcquirePlaceRequest(placename=place.name)),
                  "acquire", place.name)
            return place.name
        except DeviceError as exc:
            error = exc
    assert error is not None
    raise error


def _release(session: Any, place: str) -> None:
    from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

    _call(session, session.stub.ReleasePlace(pb2.ReleasePlaceRequest(placename=place)),
          "release", place)


def _reach(session: Any, place: str, addr: LabgridAddress) -> DeviceAddress:
    """The SSH (else serial) address of the acquired place's board, keeping ``addr``'s options."""
    resources = session.get_target_resources(session.places[place])
    by_cls: dict[str, list[Any]] = {}
    for (_name, cls), entry in sorted(resources.items()):
        by_cls.setdefault(cls, []).append(entry)
    base = {f.name: getattr(addr, f.name) for f in dataclasses.fields(DeviceAddress)}
    base["name"] = addr.name if addr.place else f"labgrid://{place}"
    for entry in by_cls.get("NetworkService", []):
        if entry.extra.get("proxy_required"):
            raise DeviceError(f"labgrid place {place}: its NetworkService {entry.args['address']} "
                              "is reachable only through the exporter host; edgert does not proxy "
                              "through it", place=place)
        base.update(scheme="ssh", host=entry.args["address"], port=int(entry.args.get("port", 22)),
                    user=entry.args.get("username") or addr.user)
        return DeviceAddress(**base)
    for entry in by_cls.get("NetworkSerialPort", []):
        if not entry.avail:
            raise DeviceError(f"labgrid place {place}: its serial port is not available "
                              "(unplugged, or the exporter lost it)", place=place)
        scheme = "socket" if entry.args.get("protocol") == "raw" else "rfc2217"
        base.update(scheme="serial", path=f"{scheme}://{entry.args['host']}:{entry.args['port']}",
                    baud=int(entry.args.get("speed") or addr.baud))
        return DeviceAddress(**base)
    kinds = ", ".join(sorted(by_cls)) or "no resources"
    raise DeviceError(f"labgrid place {place} has neither a NetworkService nor a NetworkSerialPort "
                      f"to reach its board (it has {kinds})", place=place)


@contextlib.contextmanager
def acquired(addr: LabgridAddress) -> Iterator[DeviceAddress]:
    """Acquire the place, yield an ``ssh://`` or ``serial://`` address of its board, release it.

    The place is released however the block ends (error, Ctrl-C). A failed release after a
    successful block raises; after a failed block it is only warned about, so the block's own
    error is the one reported.
    """
    coordinator = coordinator_address(addr)
    with _session(coordinator) as session:
        place = _acquire(session, addr)
        try:
            reached = _reach(session, place, addr)
        except BaseException:
            _release(session, place)
            raise
    finished = False
    try:
        yield reached
        finished = True
    finally:
        try:
            with _session(coordinator) as again:
                _release(again, place)
        except DeviceError as exc:
            if finished:
                raise
            sys.stderr.write(f"edgert: warning: {exc.message}; release it with: "
                             f"labgrid-client -x {coordinator} -p {place} release\n")

