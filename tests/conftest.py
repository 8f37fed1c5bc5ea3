"""Shared pytest setup: make tests/ importable for the literal reference implementations."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


# ---------------------------------------------------------------------------------------------------------
# Hub fixtures: a real olah mirror (read side) and tests/hub_server.py (upload side) on 127.0.0.1,
# started once per session and stopped by PID. Repos live as git repositories in olah's mirrors path.
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (the scripts are not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
OLAH_BIN = os.environ.get('MNZOO_OLAH_BIN') or os.path.join(
    os.environ.get('MNZOO_OLAH_VENV', '/opt/olah-venv'), 'bin', 'olah-cli')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Return once ``url`` answers any HTTP status; fail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f'server exited with status {proc.returncode} before answering {url}')
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f'server did not answer {url} within {timeout:.0f} s')


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


class HubServers:
    """Endpoints and the mirrors path shared by the olah and upload servers."""

    def __init__(self, olah: str, mirrors: Path) -> None:
        self.olah, self.mirrors, self.upload = olah, mirrors, None

    def add_repo(self, repo_id: str, folder: Path) -> Path:
        """Commit the files of ``folder`` as the git repo ``repo_id`` that olah serves."""
        repo = self.mirrors / 'models' / repo_id
        if repo.exists():
            raise FileExistsError(f'{repo_id} already in the mirror; use a fresh name')
        shutil.copytree(folder, repo)
        env = dict(os.environ, GIT_AUTHOR_NAME='t', GIT_AUTHOR_EMAIL='t@t', GIT_COMMITTER_NAME='t',
                   GIT_COMMITTER_EMAIL='t@t')
        for cmd in (['init', '-q', '-b', 'main'], ['add', '-A'], ['commit', '-q', '-m', 'export']):
            subprocess.run(['git', '-C', str(repo), *cmd], check=True, env=env, capture_output=True)
        return repo


@pytest.fixture(scope='session')
def hub_servers(tmp_path_factory):
    """olah on a free port serving git repos under a temp mirrors path (offline), plus the upload server."""
    if not os.access(OLAH_BIN, os.X_OK):
        msg = (f'olah not found at {OLAH_BIN}: install it with `python3 -m venv /opt/olah-venv && '
               f'/opt/olah-venv/bin/pip install olah` or set MNZOO_OLAH_BIN')
        if os.environ.get('MNZOO_REQUIRE_OLAH'):
            pytest.fail(msg)
        pytest.skip(msg)
    base = tmp_path_factory.mktemp('hub')
    mirrors = base / 'mirrors'
    (mirrors / 'models').mkdir(parents=True)
    port = free_port()
    config = base / 'olah.toml'
    config.write_text(
        '[basic]\n'
        'host = "127.0.0.1"\n'
        f'port = {port}\n'
        f'repos-path = "{base / "olah-cache"}"\n'
        f'mirrors-path = ["{mirrors}"]\n'
        'metadata-cache-ttl = 0\n'
        '\n[accessibility]\n'
        'offline = true\n')
    log = open(base / 'olah.log', 'wb')
    olah = subprocess.Popen([OLAH_BIN, '-c', str(config), '--log-path', str(base / 'logs')],
                            cwd=base, stdout=log, stderr=subprocess.STDOUT)
    upload = None
    try:
        endpoint = f'http://127.0.0.1:{port}'
        _wait_http(f'{endpoint}/api/models/none/none/revision/main', olah)
        servers = HubServers(endpoint, mirrors)
        port_file = base / 'upload.port'
        upload = subprocess.Popen([sys.executable, str(Path(__file__).with_name('hub_server.py')),
                                   '--root', str(mirrors), '--port-file', str(port_file)],
                                  stdout=subprocess.DEVNULL, stderr=open(base / 'upload.log', 'wb'))
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline and upload.poll() is None:
            time.sleep(0.05)
        if not port_file.exists():
            raise RuntimeError(f'upload server did not start: {(base / "upload.log").read_text()}')
        servers.upload = f'http://127.0.0.1:{port_file.read_text().strip()}'
        _wait_http(f'{servers.upload}/api/models/none/none', upload)
        yield servers
    finally:
        if upload is not None:
            _stop(upload)
        _stop(olah)
        log.close()


@pytest.fixture
def hf_hub_env(hub_servers, monkeypatch, tmp_path):
    """Point huggingface_hub (already imported: its constants are read at import) at olah, with a fresh
    cache, and hide local weights: MNZOO_WEIGHTS_DIR is an empty folder."""
    from huggingface_hub import constants
    empty = tmp_path / 'no-weights-cards'
    empty.mkdir()
    monkeypatch.setenv('HF_ENDPOINT', hub_servers.olah)
    monkeypatch.setenv('MNZOO_WEIGHTS_DIR', str(empty))
    monkeypatch.setattr(constants, 'ENDPOINT', hub_servers.olah)
    monkeypatch.setattr(constants, 'HUGGINGFACE_CO_URL_TEMPLATE',
                        hub_servers.olah + '/{repo_id}/resolve/{revision}/{filename}')
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hf-cache'))
    return hub_servers


def subprocess_env(**extra: str) -> dict:
    """Environment for child processes: no network, the repo importable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'MNZOO_'))}
    env.update(HF_HUB_DISABLE_TELEMETRY='1', PYTHONPATH=str(REPO_ROOT), **extra)
    return env
