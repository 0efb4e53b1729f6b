"""Contract suites for the swappable integrations: every implementation passes the same tests.

Today: the local artifact store and the simulated Kubernetes cluster. The S3-style store and
the real Kubernetes client join by adding a param.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudops.db.engine import Database
from cloudops.db.migrate import migrate
from cloudops.integrations.artifacts import ArtifactStore, LocalArtifactStore
from cloudops.integrations.kubernetes import KubernetesClient, SimulatedKubernetes


@pytest.fixture(params=["local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    assert request.param == "local"
    return LocalArtifactStore(tmp_path / "data")


async def test_store_put_get_stat(store: ArtifactStore) -> None:
    data = b"backup bytes" * 1000
    stored = await store.put("backups/postgres/db1/1.dump", data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size_bytes == len(data)
    assert await store.get("backups/postgres/db1/1.dump") == data
    assert await store.stat("backups/postgres/db1/1.dump") == stored
    assert await store.stat("backups/none") is None
    with pytest.raises(FileNotFoundError):
        await store.get("backups/none")


async def test_store_overwrite_is_atomic_and_refuses_escapes(store: ArtifactStore) -> None:
    await store.put("a/b.json", b"1")
    await store.put("a/b.json", b"22")
    assert await store.get("a/b.json") == b"22"
    for bad in ("../etc/passwd", "/abs/path", ""):
        with pytest.raises(ValueError):
            await store.put(bad, b"x")


@pytest.fixture(params=["simulated"])
async def kubernetes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[KubernetesClient]:
    assert request.param == "simulated"
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'k8s.db'}")
    await migrate(db)
    yield SimulatedKubernetes(db)
    await db.dispose()


async def test_restart_is_idempotent_per_token(kubernetes: KubernetesClient) -> None:
    before = await kubernetes.get_workload("shop", "web")
    assert await kubernetes.restart("shop", "web", "task-1") is True
    assert await kubernetes.restart("shop", "web", "task-1") is False
    assert await kubernetes.restart("shop", "web", "task-2") is True
    after = await kubernetes.get_workload("shop", "web")
    assert after.generation == before.generation + 2
    assert after.restarted_at == "task-2"
