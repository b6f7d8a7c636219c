from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.gateway import Gateway

REPO = Path(__file__).resolve().parent.parent


def write_config(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return directory


def copy_shipped_config(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("providers.yaml", "routes.yaml", "routes.test.yaml"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, directory / name)
    shutil.copytree(REPO / "pipelines", directory / "pipelines", dirs_exist_ok=True)
    return directory


@pytest.fixture
def start_gateway() -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(config_dir: Path, env: dict[str, str] | None = None, workers: int = 1) -> Gateway:
        gateway = Gateway(config_dir, env=env, workers=workers)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def shipped_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The shipped config, no credentials: everything answers from echo."""
    directory = copy_shipped_config(tmp_path_factory.mktemp("shipped"))
    gateway = Gateway(directory)
    yield gateway
    gateway.stop()
