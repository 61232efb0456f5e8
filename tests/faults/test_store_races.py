"""Two hosts pushing one artifact at the same moment share the upload (issue 16, case 6)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading

from edgert.device_agents import serve
from edgert.device_agents.agent import Agent
from edgert.device_agents.store import ArtifactStore
from edgert.hashing import sha256_file
from conftest import make_matmul_model

TOKEN = "correct-horse-battery-staple"


def _agent_on(store_dir) -> int:
    """A TCP agent (port 0) with its own ArtifactStore object on ``store_dir``; returns its port."""
    ready = threading.Event()
    threading.Thread(target=serve.serve_tcp, daemon=True,
                     args=(Agent(ArtifactStore(store_dir)), "127.0.0.1", 0, TOKEN, ready)).start()
    assert ready.wait(10)
    return ready.port


def test_concurrent_pushes_of_one_artifact_both_succeed_and_store_it_once(tmp_path):
    store_dir = tmp_path / "store"
    ports = [_agent_on(store_dir), _agent_on(store_dir)]  # two agents on one store, as with SSH sessions
    model = make_matmul_model(tmp_path / "big.onnx", symbolic=False, size=1600)  # ~10 MB: many chunks
    token = tmp_path / "token"
    token.write_text(TOKEN)
    env = {**os.environ, "EDGERT_TOKEN_FILE": str(token)}
    pushes = [subprocess.Popen([sys.executable, "-m", "edgert", "push", str(model), "--device",
                                f"tcp://127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
              for port in (ports[0], ports[1], ports[0])]
    for push in pushes:
        _, err = push.communicate(timeout=300)
        assert push.returncode == 0, err
        assert "resume from" not in err
    sha = sha256_file(model)
    store = ArtifactStore(store_dir)
    assert store.have(sha) == (True, model.stat().st_size)
    assert sha256_file(store.path(sha)) == sha
    assert not list((store_dir / "partial").iterdir())


def test_a_chunk_already_held_is_skipped_and_a_gap_still_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    data = os.urandom(3000)
    sha = hashlib.sha256(data).hexdigest()
    assert store.write_chunk(sha, 0, data[:2000], 3000) == 2000
    assert store.write_chunk(sha, 1000, data[1000:2500], 3000) == 2500  # overlaps: only the tail is new
    assert store.write_chunk(sha, 0, data[:1000], 3000) == 2500  # all held: skipped
    assert store.write_chunk(sha, 2500, data[2500:], 3000) == 3000
    store.finish(sha)
    assert store.write_chunk(sha, 0, data[:1000], 3000) == 3000  # a late chunk of the other host
    assert store.path(sha).read_bytes() == data
