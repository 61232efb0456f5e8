"""SweepRequest: the sweep's one set of defaults, and what crosses the wire for sweep.run."""
from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from edgert.errors import ProtocolError, UsageError
from edgert.settings import BenchSettings, SweepRequest


def test_round_trips_through_msgpack_with_paths_as_text(tmp_path: Path) -> None:
    request = SweepRequest(backend="tflite", settings=BenchSettings(runs=3, threads=2), dims={"N": 2},
                           cpu_freqs=(600000, 1200000), cpu_policies=("policy0",), gpu_freqs="all",
                           emulated_levels=(1.0, 0.5), power="none", journal_path=tmp_path / "j.json",
                           all_levels=True)
    sent = msgpack.unpackb(msgpack.packb(request.to_dict()))
    assert sent["journal_path"] == str(tmp_path / "j.json")
    assert SweepRequest.from_dict(sent) == request


def test_the_defaults_are_the_documented_ones() -> None:
    request = SweepRequest.from_dict({})
    assert (request.backend, request.power, request.sample_rate_hz, request.idle_s,
            request.cool_timeout_s, request.pin_method) == ("ort", "auto", 100.0, 1.0, 120.0, "minmax")
    assert request.settings == BenchSettings() and request.emulated_levels == ()


@pytest.mark.parametrize("data, says", [
    ([1, 2], "is a map"),
    ({"emulated": [0.5]}, "unknown sweep request field(s) emulated"),
    ({"cpu_freqs": ["fast"]}, "integer frequencies"),
    ({"cpu_freqs": 1200000}, "cpu_freqs is int"),
    ({"idle_s": "1"}, "idle_s is str"),
    ({"all_levels": 1}, "all_levels is int"),
    ({"emulated_levels": [0.0]}, "(0, 1]"),
    ({"pin_method": "turbo"}, "unknown pin method"),
    ({"settings": {"runs": 0}}, "--runs must be 1..10000000"),
    ({"settings": "fast"}, "bad sweep request"),
])
def test_a_bad_request_from_a_peer_is_a_protocol_error_naming_the_field(data, says: str) -> None:
    with pytest.raises(ProtocolError) as info:
        SweepRequest.from_dict(data)
    assert says in info.value.message


def test_bad_values_given_here_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="sample-rate"):
        SweepRequest(sample_rate_hz=0)
    with pytest.raises(UsageError, match="cpu_freqs"):
        SweepRequest(cpu_freqs="some")


@pytest.mark.parametrize("fields, says", [
    ({"idle_s": float("nan")}, "--idle must be 0..86400 seconds"),  # a traceback mid-sweep
    ({"idle_s": 1e12}, "--idle must be 0..86400 seconds"),
    ({"cool_timeout_s": float("inf")}, "--cool-timeout must be"),
    ({"sample_rate_hz": float("nan")}, "--sample-rate must be above 0"),
    ({"cool_below_c": float("nan")}, "--cool-below must be -40..150"),  # waited the whole timeout per point
    ({"cool_below_c": -300.0}, "--cool-below must be -40..150"),
    ({"settings": BenchSettings(runs=5)}, None),
])
def test_waits_rates_and_temperatures_must_be_real(fields: dict, says: str | None) -> None:
    if says is None:
        SweepRequest(**fields)
        return
    with pytest.raises(UsageError, match=says):
        SweepRequest(**fields)


@pytest.mark.parametrize("fields, says", [({"runs": 10 ** 20}, "--runs must be 1..10000000"),
                                          ({"warmup_runs": 10 ** 11}, "--warmup must be 0..10000000")])
def test_run_counts_are_bounded(fields: dict, says: str) -> None:
    """--runs 1e20 ran until memory ran out (every sample is kept)."""
    with pytest.raises(UsageError, match=says):
        BenchSettings(**fields)


def test_a_frequency_no_board_reaches_is_refused() -> None:
    from edgert.sweep import parse_freqs

    with pytest.raises(UsageError, match="above 100 GHz"):
        parse_freqs("600000,1e99", "kHz")
    assert parse_freqs("600000,1.8GHz", "kHz") == (600000, 1800000)

