"""Device URLs and the edgert.toml inventory."""
from pathlib import Path

import pytest

from edgert.devices.address import parse_url, resolve
from edgert.errors import UsageError


def test_urls():
    ssh = parse_url("ssh://pi@board.local:2222")
    assert (ssh.scheme, ssh.user, ssh.host, ssh.port) == ("ssh", "pi", "board.local", 2222)
    serial = parse_url("serial:///dev/ttyUSB0?baud=921600")
    assert (serial.scheme, serial.path, serial.baud) == ("serial", "/dev/ttyUSB0", 921600)
    assert parse_url("serial:///dev/ttyAMA0").baud == 115200
    tcp = parse_url("tcp://10.0.0.5:7723")
    assert (tcp.host, tcp.port) == ("10.0.0.5", 7723)
    assert parse_url("local").scheme == "local"


@pytest.mark.parametrize("url, words", [
    ("http://x", "unknown device"), ("tcp://host", "needs a port"), ("serial://", "device path"),
    ("serial:///dev/x?baud=fast", "bad baud"), ("ssh://host:port", "bad port"),
])
def test_bad_urls(url, words):
    with pytest.raises(UsageError, match=words):
        parse_url(url)


def test_inventory_names_with_defaults(tmp_path: Path):
    inv = tmp_path / "edgert.toml"
    inv.write_text('[devices.pi5]\nurl = "ssh://pi@pi5.local"\nssh_key = "~/.ssh/pi"\n'
                   'agent_cmd = "/opt/edgert/bin/edgert agent --stdio"\n\n'
                   '[devices.qemu]\nurl = "ssh://root@127.0.0.1:2200"\nemulated = true\n')
    pi5 = resolve("pi5", inv)
    assert pi5.name == "pi5" and pi5.host == "pi5.local" and pi5.user == "pi"
    assert pi5.ssh_key == Path("~/.ssh/pi").expanduser()
    assert pi5.agent_cmd == "/opt/edgert/bin/edgert agent --stdio" and not pi5.emulated
    assert resolve("qemu", inv).emulated
    assert resolve("tcp://h:1", inv).scheme == "tcp"  # URLs still work with an inventory
    with pytest.raises(UsageError, match="unknown device 'orin'; inventory devices: pi5, qemu"):
        resolve("orin", inv)
    inv.write_text('[devices.broken]\nhost = "x"\n')
    with pytest.raises(UsageError, match="has no url"):
        resolve("broken", inv)


def test_a_config_home_that_cannot_be_read_means_no_inventory(tmp_path: Path, monkeypatch) -> None:
    """Another user's unreadable HOME made every command (even --device local) raise OSError from
    the inventory lookup. A name too long for the file system raises the same way, root or not."""
    from edgert.devices.address import inventory_path

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ("x" * 300)))
    monkeypatch.chdir(tmp_path)
    assert inventory_path() is None


@pytest.mark.parametrize("url, says", [
    ("tcp://[::1:47311", "bad device URL"),  # urlsplit's ValueError was a traceback
    ("serial:///dev/ttyS0?baud=99999999999999999999", "not a serial line rate"),  # pyserial OverflowError
    ("serial:///dev/ttyS0?baud=0", "not a serial line rate"),
    ("tcp://127.0.0.1:47311/extra?x=1", "takes only"),  # was accepted and the rest ignored
    # each of these was accepted and the mistake ignored:
    ("serial:///dev/ttyUSB0?bud=921600", "unknown option 'bud' \\(the only one is baud=N\\)"),
    ("serial:///dev/ttyUSB0?baud=9600&parity=E", "unknown option 'parity'"),
    ("tcp://127.0.0.1:0", "port 0 is not a port to connect to"),
    ("ssh://pi@board:0", "port 0 is not a port to connect to"),
    ("tcp://user@127.0.0.1:7723", "tcp:// takes no user"),
    ("ssh://pi:secret@board", "no password in a URL"),
])
def test_bad_device_urls_are_usage_errors(url: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_url(url)


@pytest.mark.parametrize("toml, says", [
    ('[devices.a]\nurl = 5\n', "device 'a' in INV: url must be a string, got an integer (5)"),
    ('[devices.a]\nurl = "tcp://h:1"\ntoken_file = 7\n', "device 'a' in INV: token_file must be a string"),
    ('[devices.a]\nurl = "tcp://h:1"\nssh_key = ["k"]\n', "device 'a' in INV: ssh_key must be a string, got an array"),
    ('[devices.a]\nurl = "tcp://h:1"\nemulated = "no"\n', "device 'a' in INV: emulated must be true or false"),
    ('[devices.a]\nurl = "tcp://h:1"\nemulated = 1\n', "device 'a' in INV: emulated must be true or false"),
    ('devices = 3\n', "devices in INV must be tables ([devices.NAME]), got an integer (3)"),
    ('[devices]\na = "tcp://h:1"\n', "device 'a' in INV must be a table ([devices.a]), got a string"),
    ('[devices.a]\nurl = "tcp://h"\n', "device 'a' in INV: tcp device URL 'tcp://h' needs a port"),
])
def test_inventory_fields_of_the_wrong_type_are_one_line(tmp_path: Path, toml: str, says: str) -> None:
    """url = 5 and devices = 3 were AttributeError tracebacks, ssh_key = ["k"] a TypeError, and
    emulated = "no" counted as true."""
    inv = tmp_path / "edgert.toml"
    inv.write_text(toml)
    with pytest.raises(UsageError) as caught:
        resolve("a", inv)
    assert caught.value.message.startswith(says.replace("INV", str(inv))), caught.value.message


def test_a_bad_inventory_is_one_line_from_the_cli(tmp_path: Path) -> None:
    from conftest import run_cli

    inv = tmp_path / "edgert.toml"
    inv.write_text('[devices.a]\nurl = 5\n')
    proc = run_cli("device", "info", "--device", "a", "--inventory", str(inv))
    assert proc.returncode == 2
    assert proc.stderr == f"edgert: error: device 'a' in {inv}: url must be a string, got an integer (5)\n"
