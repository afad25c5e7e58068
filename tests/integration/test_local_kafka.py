"""`sluice kafka up/status/down` on a cluster of the test's own, and its failure messages."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipelines.cli import run
from pipelines.localkafka import LocalCluster, free_base_port


def test_up_twice_status_and_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, port = tmp_path / "kafka", free_base_port(2)
    args = ["--data-dir", str(root)]
    try:
        assert run(["kafka", "up", "--port", str(port), *args]) == 0
        assert f"bootstrap servers: 127.0.0.1:{port}" in capsys.readouterr().out
        assert run(["kafka", "up", *args]) == 0
        assert "already running" in capsys.readouterr().out
        assert run(["kafka", "status", "--json", *args]) == 0
        out = capsys.readouterr().out
        assert '"up": true' in out
        assert '"kafka_version": "4.' in out
    finally:
        assert run(["kafka", "down", *args]) == 0
    capsys.readouterr()
    assert run(["kafka", "status", *args]) == 1
    assert "no Kafka broker answered" in capsys.readouterr().out
    assert run(["kafka", "down", "--purge", *args]) == 0
    assert not root.exists()


def test_port_in_use_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_base_port(2)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        code = run(["kafka", "up", "--port", str(port), "--data-dir", str(tmp_path / "k")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"port {port}" in err
    assert "already in use" in err
    assert "Traceback" not in err


def test_broker_that_dies_at_start_is_explained_with_its_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A data dir whose meta.properties names another node makes Kafka itself refuse to start."""
    root, port = tmp_path / "kafka", free_base_port(2)
    cluster = LocalCluster(root, 1, port)
    cluster.up(timeout=120)
    cluster.down()
    meta = root / "node-1" / "data" / "meta.properties"
    meta.write_text(meta.read_text().replace("node.id=1", "node.id=7"))
    code = run(["kafka", "up", "--data-dir", str(root), "--timeout", "60"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Kafka node 1 exited" in err
    assert "last lines of" in err
    assert "server.log" in err
    assert "Traceback" not in err.splitlines()[0]
    LocalCluster(root).down(purge=True)


def test_corrupt_data_dir_of_another_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, port = tmp_path / "kafka", free_base_port(2)
    cluster = LocalCluster(root, 1, port)
    cluster.up(timeout=120)
    cluster.down()
    meta = root / "node-1" / "data" / "meta.properties"
    lines = [
        ln if not ln.startswith("cluster.id=") else "cluster.id=AAAAAAAAAAAAAAAAAAAAAA"
        for ln in meta.read_text().splitlines()
    ]
    meta.write_text("\n".join(lines) + "\n")
    assert run(["kafka", "up", "--data-dir", str(root)]) == 1
    assert "corrupt data dir" in capsys.readouterr().err
    LocalCluster(root).down(purge=True)
