"""A tiny Hub-compatible upload server for tests: create-repo, validate-yaml, preupload, commit.

olah (the read-only mirror used by the tests) has no upload routes, so ``mnzoo.hub.publish`` pushes here.
Every repo is a git repository at ``<root>/models/<org>/<name>``, i.e. inside olah's ``mirrors-path``, so a
commit made here is immediately downloadable through olah. Only what ``HfApi.create_repo`` and
``HfApi.upload_folder`` of huggingface_hub 2.x send is implemented; every file is answered with
``uploadMode: regular`` (content inline, base64, in the NDJSON commit), so no LFS or Xet transfer is needed.

Run: ``python tests/hub_server.py --root DIR [--port 0] [--port-file FILE]``. Binds 127.0.0.1 only.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

_LOCK = threading.Lock()
_GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME='mnzoo-test', GIT_AUTHOR_EMAIL='test@mnzoo.invalid',
                GIT_COMMITTER_NAME='mnzoo-test', GIT_COMMITTER_EMAIL='test@mnzoo.invalid')
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(['git', '-C', str(repo), *args], check=True, capture_output=True, text=True, env=_GIT_ENV)
    return out.stdout.strip()


class HubHandler(BaseHTTPRequestHandler):
    server_version = 'mnzoo-test-hub/1.0'
    root: Path = Path('.')

    # ------------------------------------------------------------------ helpers
    def log_message(self, fmt: str, *args: Any) -> None:  # keep pytest output quiet
        pass

    def _send(self, status: int, payload: Dict[str, Any], error_code: Optional[str] = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        if error_code:
            self.send_header('X-Error-Code', error_code)
            self.send_header('X-Error-Message', payload.get('error', ''))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        n = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(n) if n else b''

    def _repo(self, org: str, name: str) -> Path:
        return self.root / 'models' / org / name

    def _base(self) -> str:
        host, port = self.server.server_address[:2]
        return f'http://{host}:{port}'

    def _match_repo_route(self, path: str, action: str) -> Optional[Tuple[str, str, str]]:
        m = re.match(rf'^/api/models/([^/]+)/([^/]+)/{action}/(.+)$', path)
        return (m.group(1), m.group(2), m.group(3)) if m else None

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:  # noqa: N802
        m = re.match(r'^/api/models/([^/]+)/([^/?]+)(?:/revision/([^/?]+))?', self.path)
        if not m:
            return self._send(404, {'error': f'no route GET {self.path}'})
        repo = self._repo(m.group(1), m.group(2))
        if not (repo / '.git').is_dir():
            return self._send(404, {'error': 'Repository not found'}, 'RepoNotFound')
        with _LOCK:
            sha = _git(repo, 'rev-parse', 'HEAD')
            files = _git(repo, 'ls-tree', '-r', '--name-only', 'HEAD').splitlines()
        self._send(200, {'id': f'{m.group(1)}/{m.group(2)}', 'sha': sha, 'private': False,
                         'siblings': [{'rfilename': f} for f in files]})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split('?', 1)[0]
        if path == '/api/repos/create':
            return self._create(json.loads(self._body() or b'{}'))
        if path == '/api/validate-yaml':
            return self._validate_yaml(json.loads(self._body() or b'{}'))
        route = self._match_repo_route(path, 'preupload')
        if route:
            return self._preupload(*route, json.loads(self._body() or b'{}'))
        route = self._match_repo_route(path, 'commit')
        if route:
            return self._commit(*route, self._body())
        self._send(404, {'error': f'no route POST {path}'})

    def _create(self, payload: Dict[str, Any]) -> None:
        org, name = payload.get('organization'), payload.get('name')
        if payload.get('type', 'model') != 'model':
            return self._send(400, {'error': 'this test server only hosts model repos'})
        if not org or not name or not _NAME.match(org) or not _NAME.match(name):
            return self._send(400, {'error': f'invalid repo name {org}/{name}'})
        repo = self._repo(org, name)
        url = f'{self._base()}/{org}/{name}'
        with _LOCK:
            if (repo / '.git').is_dir():
                return self._send(409, {'error': 'You already created this model repo', 'url': url})
            repo.mkdir(parents=True)
            _git(repo, 'init', '-q', '-b', 'main')
            # No .gitattributes with LFS filters: files are committed as plain blobs, which olah serves.
            _git(repo, 'commit', '-q', '--allow-empty', '-m', 'initial commit')
        self._send(200, {'url': url, 'name': f'{org}/{name}'})

    def _validate_yaml(self, payload: Dict[str, Any]) -> None:
        import yaml
        content = payload.get('content', '')
        m = re.match(r'^---\n(.*?)\n---\n', content, flags=re.S)
        try:
            meta = yaml.safe_load(m.group(1)) if m else None
        except yaml.YAMLError as e:
            return self._send(400, {'errors': [{'message': f'invalid YAML: {e}'}]})
        warnings = [] if meta else [{'message': 'empty or missing metadata'}]
        self._send(200, {'errors': [], 'warnings': warnings})

    def _preupload(self, org: str, name: str, rev: str, payload: Dict[str, Any]) -> None:
        if not (self._repo(org, name) / '.git').is_dir():
            return self._send(404, {'error': 'Repository not found'}, 'RepoNotFound')
        files = [{'path': f['path'], 'uploadMode': 'regular', 'shouldIgnore': False}
                 for f in payload.get('files', [])]
        self._send(200, {'files': files, 'commitOid': None})

    def _commit(self, org: str, name: str, rev: str, body: bytes) -> None:
        repo = self._repo(org, name)
        if not (repo / '.git').is_dir():
            return self._send(404, {'error': 'Repository not found'}, 'RepoNotFound')
        if rev != 'main':
            return self._send(400, {'error': f'only revision main is supported, got {rev}'})
        summary = 'commit'
        with _LOCK:
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item['key'], item['value']
                if key == 'header':
                    summary = value.get('summary') or summary
                elif key == 'file':
                    target = (repo / value['path']).resolve()
                    if repo.resolve() not in target.parents:
                        return self._send(400, {'error': f'path escapes the repo: {value["path"]}'})
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(value['content']))
                elif key == 'deletedFile':
                    (repo / value['path']).unlink(missing_ok=True)
                else:
                    return self._send(400, {'error': f'unsupported commit operation {key!r} (no LFS here)'})
            _git(repo, 'add', '-A')
            _git(repo, 'commit', '-q', '--allow-empty', '-m', summary)
            sha = _git(repo, 'rev-parse', 'HEAD')
        self._send(200, {'commitUrl': f'{self._base()}/{org}/{name}/commit/{sha}', 'commitOid': sha,
                         'success': True})


def serve(root: Path, port: int = 0, port_file: Optional[Path] = None) -> None:
    """Serve forever on 127.0.0.1:port (0 = any free port, written to ``port_file``)."""
    HubHandler.root = root
    root.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(('127.0.0.1', port), HubHandler)
    if port_file is not None:
        tmp = port_file.with_suffix('.tmp')
        tmp.write_text(str(server.server_address[1]))
        tmp.replace(port_file)
    server.serve_forever()


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--root', type=Path, required=True, help="olah's mirrors-path")
    ap.add_argument('--port', type=int, default=0)
    ap.add_argument('--port-file', type=Path, default=None)
    a = ap.parse_args()
    serve(a.root, a.port, a.port_file)
