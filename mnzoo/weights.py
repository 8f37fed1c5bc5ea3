"""Weight metadata and verified resolution for mnzoo's pretrained weights.

Metadata is data: every published weight ``<arch>.<tag>`` has one entry in
``mnzoo/weights_manifest.json`` (sha256, file size, parameter count, metrics, Hub id) and one folder
``weights_cards/<arch>.<tag>/`` in the repository, which is exactly the Hub repo ``mnzoo/<arch>.<tag>``.

Resolution order for ``pretrained=True`` (``fetch_verified``):

1. the local folder ``<weights dir>/<arch>.<tag>/model.safetensors`` when it exists (a checkout or a
   torch.hub clone; the weights dir defaults to ``<repo root>/weights_cards`` and can be overridden with
   ``MNZOO_WEIGHTS_DIR``);
2. otherwise ``huggingface_hub.hf_hub_download`` of ``model.safetensors`` from the Hub id (respects
   ``HF_ENDPOINT``; bounded timeouts) into the Hub cache, or into ``cache_dir`` when
   ``timm.create_model(..., cache_dir=...)`` names one.

Two-level trust for the expected sha256:

* weights in mnzoo's manifest are checked against the manifest, which ships inside the package, so a
  changed file on disk or on the Hub is always caught;
* other ``hf-hub:`` repos and ``local-dir:`` folders (e.g. a user's own ``mnzoo.hub.export``) are checked
  against the sha256 that ``export`` recorded in their ``config.json`` (``mnzoo.sha256``). That detects
  corruption and partial uploads, but not a deliberate change of both files: it is an integrity check, not
  an authenticity one.

A file passed explicitly by the caller (``pretrained_cfg_overlay=dict(file=...)``) is the caller's own: it
is only format-checked. Hub access is probed first with a bounded HEAD (``MNZOO_HUB_TIMEOUT`` s, default 10)
because huggingface_hub itself retries a dead endpoint with backoff for minutes; when the Hub is down a
cached copy is still used (and verified).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

__all__ = [
    'WeightsError', 'WeightsNotFoundError', 'IntegrityError', 'CorruptWeightsError', 'HubUnavailableError',
    'WeightsEntry', 'WEIGHTS_FILENAME', 'CONFIG_FILENAME', 'HUB_ORG',
    'manifest_path', 'weights_dir', 'load_manifest', 'get_entry', 'published', 'published_tags', 'hub_id',
    'hub_endpoint', 'check_hub_reachable', 'hub_offline_if_cached', 'sha256_file', 'check_safetensors',
    'verify_file', 'fetch_verified',
    'pretrained_overlay',
]

WEIGHTS_FILENAME = 'model.safetensors'
CONFIG_FILENAME = 'config.json'
HUB_ORG = 'mnzoo'
#: seconds for the metadata (HEAD) and the download requests; a dead server fails fast instead of hanging.
HUB_TIMEOUT_S = float(os.environ.get('MNZOO_HUB_TIMEOUT', '10'))

_PACKAGE_DIR = Path(__file__).resolve().parent
_MANIFEST_CACHE: Dict[Tuple[str, int], Dict[str, Dict[str, Any]]] = {}


class WeightsError(RuntimeError):
    """Base class for every pretrained-weight problem mnzoo reports."""


class WeightsNotFoundError(WeightsError):
    """No weight is published for the requested ``<arch>.<tag>``, or the Hub repo/file does not exist."""


class IntegrityError(WeightsError):
    """The file's sha256 differs from the recorded one (tampered or corrupted download)."""


class CorruptWeightsError(WeightsError):
    """The file is not a readable safetensors file."""


class HubUnavailableError(WeightsError):
    """The Hub endpoint could not be reached within the timeout."""


@dataclass(frozen=True)
class WeightsEntry:
    """One published weight, as recorded in the manifest."""
    name: str                      # '<arch>.<tag>'
    hf_hub_id: str
    sha256: str
    file_size: int
    num_params: int
    metrics: Dict[str, Any]
    extra: Dict[str, Any]

    @property
    def architecture(self) -> str:
        return self.name.split('.', 1)[0]

    @property
    def tag(self) -> str:
        return self.name.split('.', 1)[1]


# ---------------------------------------------------------------------------------------------- locations

def manifest_path() -> Path:
    """The manifest in use: ``$MNZOO_MANIFEST`` if set (tests, private zoos), else the packaged one."""
    env = os.environ.get('MNZOO_MANIFEST')
    return Path(env) if env else _PACKAGE_DIR / 'weights_manifest.json'


def weights_dir() -> Path:
    """Folder holding ``<arch>.<tag>/`` weight cards: ``$MNZOO_WEIGHTS_DIR`` or ``<repo root>/weights_cards``."""
    env = os.environ.get('MNZOO_WEIGHTS_DIR')
    return Path(env) if env else _PACKAGE_DIR.parent / 'weights_cards'


# ---------------------------------------------------------------------------------------------- manifest

def load_manifest(path: Optional[Union[str, Path]] = None) -> Dict[str, Dict[str, Any]]:
    """Read the manifest (``{'<arch>.<tag>': {...}}``); a missing file is an empty manifest."""
    path = Path(path) if path is not None else manifest_path()
    if not path.is_file():
        return {}
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _MANIFEST_CACHE:
        try:
            data = json.loads(path.read_text(encoding='utf-8'))
        except json.JSONDecodeError as e:
            raise WeightsError(f'Weights manifest {path} is not valid JSON: {e}') from e
        if not isinstance(data, dict):
            raise WeightsError(f'Weights manifest {path} must hold a JSON object keyed by "<arch>.<tag>".')
        _MANIFEST_CACHE.clear()
        _MANIFEST_CACHE[key] = data
    return _MANIFEST_CACHE[key]


def get_entry(name: str, manifest: Optional[Mapping[str, Any]] = None) -> Optional[WeightsEntry]:
    """The manifest entry of ``<arch>.<tag>``, or None when that weight is not published."""
    manifest = load_manifest() if manifest is None else manifest
    raw = manifest.get(name)
    if raw is None:
        return None
    known = {'hf_hub_id', 'sha256', 'file_size', 'num_params', 'metrics'}
    return WeightsEntry(
        name=name,
        hf_hub_id=raw.get('hf_hub_id') or f'{HUB_ORG}/{name}',
        sha256=raw['sha256'],
        file_size=int(raw['file_size']),
        num_params=int(raw['num_params']),
        metrics=dict(raw.get('metrics') or {}),
        extra={k: v for k, v in raw.items() if k not in known},
    )


def published(arch: Optional[str] = None) -> List[str]:
    """Sorted ``<arch>.<tag>`` names of every published weight (of one architecture if given)."""
    names = sorted(load_manifest())
    return [n for n in names if arch is None or n.split('.', 1)[0] == arch]


def published_tags(arch: str) -> List[str]:
    """Tags with published weights for ``arch``."""
    return [n.split('.', 1)[1] for n in published(arch)]


def hub_id(arch: str, tag: str) -> Optional[str]:
    """``'mnzoo/<arch>.<tag>'`` if that weight is published (in the manifest), else None.

    Model families use this for ``hf_hub_id`` in their ``default_cfgs`` so that
    ``timm.list_pretrained()`` only lists weights that exist.
    """
    entry = get_entry(f'{arch}.{tag}')
    return entry.hf_hub_id if entry is not None else None


# ---------------------------------------------------------------------------------------------- integrity

def sha256_file(path: Union[str, Path]) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def check_safetensors(path: Union[str, Path]) -> None:
    """Raise CorruptWeightsError unless ``path`` is a well-formed safetensors file (header and data extent)."""
    path = Path(path)
    size = path.stat().st_size
    problem = None
    try:
        with open(path, 'rb') as f:
            head = f.read(8)
            if len(head) < 8:
                problem = 'file shorter than the 8-byte header length'
            else:
                (n,) = struct.unpack('<Q', head)
                if n > size - 8:
                    problem = f'header length {n} exceeds the file size {size}'
                else:
                    header = json.loads(f.read(n).decode('utf-8'))
                    ends = [v['data_offsets'][1] for k, v in header.items() if k != '__metadata__']
                    if 8 + n + max(ends, default=0) != size:
                        problem = 'tensor data does not match the file size (truncated or padded)'
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, IndexError, AttributeError) as e:
        problem = f'unreadable header ({type(e).__name__}: {e})'
    if problem:
        raise CorruptWeightsError(f'{path} is not a valid safetensors file: {problem}.')


def verify_file(path: Union[str, Path], expected_sha256: str) -> Path:
    """Check format then sha256 of a weight file; return the path. Raises on any mismatch."""
    path = Path(path)
    check_safetensors(path)
    actual = sha256_file(path)
    if actual != expected_sha256.lower():
        raise IntegrityError(
            f'sha256 mismatch for {path}: expected {expected_sha256}, got {actual}. '
            f'The file was modified or corrupted; delete it (and its Hub cache entry) and download it again.')
    return path


# ---------------------------------------------------------------------------------------------- Hub access

def _probe_endpoint(url: str, timeout: float) -> Optional[str]:
    """None if the server at ``url`` answers an HTTP HEAD (any status) within ``timeout`` s, else the reason.

    huggingface_hub retries network errors with backoff and a 60 s timeout when nothing is cached, which can
    take minutes against a dead or black-holed endpoint; one bounded probe first keeps failures fast.
    """
    import urllib.error
    import urllib.request
    try:
        urllib.request.urlopen(urllib.request.Request(url, method='HEAD'), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # the server answered (401/404/...): it is up; hf_hub_download reports the status
    except (urllib.error.URLError, OSError, ValueError) as e:
        return f'{type(e).__name__}: {getattr(e, "reason", e)}'
    return None


def hub_endpoint() -> str:
    """The Hub endpoint in use: ``$HF_ENDPOINT`` read now (not at import), else huggingface_hub's default."""
    from huggingface_hub import constants as hf_constants
    return (os.environ.get('HF_ENDPOINT') or hf_constants.ENDPOINT).rstrip('/')


def check_hub_reachable(repo_id: str, filename: str = CONFIG_FILENAME, revision: Optional[str] = None) -> None:
    """Raise HubUnavailableError within ``MNZOO_HUB_TIMEOUT`` s if the endpoint does not answer for this file."""
    from huggingface_hub import hf_hub_url
    endpoint = hub_endpoint()
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    reason = _probe_endpoint(url, HUB_TIMEOUT_S)
    if reason is not None:
        raise HubUnavailableError(
            f'The Hub at {endpoint} did not answer within {HUB_TIMEOUT_S:g} s ({reason}) while fetching '
            f'{filename} of {repo_id!r}. Check the network / HF_ENDPOINT, or load from a checkout with weights_cards/.')


@contextlib.contextmanager
def hub_offline_if_cached(repo_id: str, filename: str = CONFIG_FILENAME, revision: Optional[str] = None,
                          cache_dir: Optional[Union[str, Path]] = None) -> Iterator[None]:
    """Run the block online if the Hub answers; if it does not but ``filename`` of the repo is cached,
    run it in huggingface_hub's offline mode (answers from the cache, no waits); else raise
    ``HubUnavailableError``. For ``hf-hub:`` names, whose config.json timm downloads itself."""
    from huggingface_hub import constants as hf_constants
    offline = False
    if not hf_constants.HF_HUB_OFFLINE:
        try:
            check_hub_reachable(repo_id, filename, revision)
        except HubUnavailableError:
            if _cached_file(repo_id, filename, revision, cache_dir) is None:
                raise
            offline = hf_constants.HF_HUB_OFFLINE = True  # read at call time by hf_hub_download
    try:
        yield
    finally:
        if offline:
            hf_constants.HF_HUB_OFFLINE = False


def _cached_file(repo_id: str, filename: str, revision: Optional[str],
                 cache_dir: Optional[Union[str, Path]]) -> Optional[Path]:
    """The file from the local Hub cache (``cache_dir`` when given), or None."""
    import huggingface_hub
    cached = huggingface_hub.try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    return Path(cached) if isinstance(cached, str) and os.path.isfile(cached) else None


def _hf_download(repo_id: str, filename: str, revision: Optional[str] = None,
                 cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """``hf_hub_download`` with a bounded reachability probe and mnzoo errors that say what went wrong.

    If the endpoint does not answer but the file is in the local Hub cache (``cache_dir`` when given),
    the cached copy is used (the caller verifies its sha256 anyway).
    """
    import huggingface_hub
    from huggingface_hub import constants as hf_constants
    from huggingface_hub.errors import (
        EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    endpoint = hub_endpoint()
    try:
        if not hf_constants.HF_HUB_OFFLINE:  # offline mode: hf_hub_download answers from the cache alone
            check_hub_reachable(repo_id, filename, revision)
    except HubUnavailableError:
        cached = _cached_file(repo_id, filename, revision, cache_dir)
        if cached is not None:
            return cached
        raise
    # The download timeout is a module constant in huggingface_hub; bound it too.
    hf_constants.HF_HUB_DOWNLOAD_TIMEOUT = min(hf_constants.HF_HUB_DOWNLOAD_TIMEOUT, int(max(HUB_TIMEOUT_S, 1)))
    where = f'{filename} of Hub repo {repo_id!r} at {endpoint}'
    try:
        path = huggingface_hub.hf_hub_download(
            repo_id=repo_id, filename=filename, revision=revision, endpoint=endpoint, cache_dir=cache_dir,
            etag_timeout=HUB_TIMEOUT_S, library_name='mnzoo')
    except RepositoryNotFoundError as e:
        raise WeightsNotFoundError(
            f'Hub repo {repo_id!r} not found at {endpoint} (missing or private; while fetching {filename}).') from e
    except RevisionNotFoundError as e:
        raise WeightsNotFoundError(f'Revision {revision!r} of Hub repo {repo_id!r} not found at {endpoint}.') from e
    except LocalEntryNotFoundError as e:
        raise HubUnavailableError(
            f'Could not download {where} and it is not cached: {e}') from e
    except EntryNotFoundError as e:
        raise WeightsNotFoundError(f'Hub repo {repo_id!r} at {endpoint} has no file {filename!r}.') from e
    except HfHubHTTPError as e:
        raise HubUnavailableError(f'Hub error while downloading {where}: {e}') from e
    except OSError as e:
        raise HubUnavailableError(f'Could not download {where}: {e}') from e
    return Path(path)


def _split_hub_id(hf_hub_id: str) -> Tuple[str, Optional[str]]:
    repo, _, rev = hf_hub_id.partition('@')
    return repo, (rev or None)


def _cfg_get(cfg: Any, key: str) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key)
    return getattr(cfg, key, None)


def _weight_name(cfg: Any) -> Tuple[Optional[str], Optional[str]]:
    """(arch, tag) of a pretrained cfg; for ``hf-hub:mnzoo/<arch>.<tag>`` cfgs the tag comes from the id."""
    arch, tag = _cfg_get(cfg, 'architecture'), _cfg_get(cfg, 'tag')
    hid = _cfg_get(cfg, 'hf_hub_id')
    if not tag and hid:
        repo, _ = _split_hub_id(hid)
        base = repo.rsplit('/', 1)[-1]
        if '.' in base and (arch is None or base.split('.', 1)[0] == arch):
            arch, tag = base.split('.', 1)
    return arch, tag


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise WeightsNotFoundError(f'Weight file {path} does not exist.')
    return path


def _recorded_sha(config_path: Path, where: str) -> str:
    """The sha256 that ``mnzoo.hub.export`` recorded in a config.json (second trust level)."""
    try:
        sha = json.loads(Path(config_path).read_text(encoding='utf-8'))['mnzoo']['sha256']
        if not isinstance(sha, str) or len(sha) != 64:
            raise TypeError(f'not a sha256: {sha!r}')
        return sha
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise IntegrityError(
            f'{where} has no recorded sha256 (config.json key "mnzoo.sha256"), so its weights cannot be '
            f'verified ({type(e).__name__}: {e}). Re-export it with mnzoo.hub.export.') from e


def fetch_verified(pretrained_cfg: Any, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Local path of a sha256-verified ``model.safetensors`` for a resolved timm pretrained cfg.

    ``pretrained_cfg`` is timm's ``PretrainedCfg`` (or its dict form) with ``architecture``, ``tag`` and
    ``hf_hub_id``. Weights in the manifest come from the local weights dir if present, else the Hub, and are
    checked against the manifest sha256. Other ``hf-hub:`` repos (``source == 'hf-hub'``) and
    ``local-dir:`` folders (``source == 'local-dir'``) are checked against their ``config.json``'s
    ``mnzoo.sha256`` (written by ``mnzoo.hub.export``). Hub downloads go to ``cache_dir`` when given (as
    timm's ``create_model(cache_dir=...)``), else to the Hub cache. Raises a ``WeightsError`` subclass
    naming the problem.
    """
    arch, tag = _weight_name(pretrained_cfg)
    hid = _cfg_get(pretrained_cfg, 'hf_hub_id')
    source = _cfg_get(pretrained_cfg, 'source')
    if source == 'local-dir':
        # ``timm.create_model('local-dir:<folder>')``: a folder written by mnzoo.hub.export.
        folder = Path(_cfg_get(pretrained_cfg, 'file') or '')
        return verify_file(_existing(folder / WEIGHTS_FILENAME), _recorded_sha(folder / CONFIG_FILENAME, str(folder)))
    name = f'{arch}.{tag}' if arch and tag else (arch or '?')
    entry = get_entry(name) if arch and tag else None
    # A user's own hf-hub repo that merely shares a name with a published weight is still theirs.
    if entry is not None and source == 'hf-hub' and hid and _split_hub_id(hid)[0] != entry.hf_hub_id:
        entry = None

    if entry is not None:
        local = weights_dir() / entry.name / WEIGHTS_FILENAME
        if local.is_file():
            return verify_file(local, entry.sha256)
        repo, rev = _split_hub_id(hid) if hid else (entry.hf_hub_id, None)
        return verify_file(_hf_download(repo, WEIGHTS_FILENAME, rev, cache_dir), entry.sha256)

    if source == 'hf-hub' and hid:
        repo, rev = _split_hub_id(hid)
        expected = _recorded_sha(_hf_download(repo, CONFIG_FILENAME, rev, cache_dir), f'Hub repo {repo!r}')
        return verify_file(_hf_download(repo, WEIGHTS_FILENAME, rev, cache_dir), expected)

    tags = published_tags(arch) if arch else []
    avail = ', '.join(f'{arch}.{t}' for t in tags) if tags else 'none'
    raise WeightsNotFoundError(
        f'No published weights for {name!r}. Published weights for {arch}: {avail}. '
        f'Use pretrained=False for random init.')


def pretrained_overlay(
        variant: str,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
        in_chans: Optional[int] = None,
        cache_dir: Optional[Union[str, Path]] = None,
) -> Dict[str, Any]:
    """The ``pretrained_cfg_overlay`` a family's ``_create_*`` passes to ``build_model_with_cfg`` when pretrained.

    Resolves the cfg exactly as timm will (registry tag, or the dict timm built from an ``hf-hub:`` config),
    fetches and verifies the weight file, and points timm's own loader at it. ``source`` is reset because
    timm ignores ``file`` for ``source='hf-hub'`` cfgs and would otherwise download the file again unverified.

    Usage in a family file::

        if pretrained:
            kwargs['pretrained_cfg_overlay'] = pretrained_overlay(
                variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'), kwargs.get('in_chans'))
        return build_model_with_cfg(Model, variant, pretrained, **kwargs)
    """
    from timm.models._builder import resolve_pretrained_cfg
    user_file = (pretrained_cfg_overlay or {}).get('file')
    if user_file:
        # The caller's own weight file (``pretrained_cfg_overlay=dict(file=...)``): their file, their trust.
        # It must exist and, if safetensors, be well formed; timm loads other formats with weights_only=True.
        path = Path(user_file)
        if not path.is_file():
            raise WeightsNotFoundError(f'pretrained_cfg_overlay file {path} does not exist.')
        if path.suffix == '.safetensors':
            check_safetensors(path)
        return dict(pretrained_cfg_overlay or {}, source='file', custom_load=False)
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=pretrained_cfg_overlay)
    if in_chans is not None:
        src = (cfg.input_size or (3,))[0]
        if in_chans != src and not cfg.first_conv:
            arch, tag = _weight_name(cfg)
            raise ValueError(
                f'in_chans={in_chans} is incompatible with the {arch}.{tag} weights, which were trained on {src} '
                f'input channels, and {arch} names no first_conv that timm could adapt. '
                f'Use in_chans={src} or pretrained=False.')
    path = fetch_verified(cfg, cache_dir)
    overlay = dict(pretrained_cfg_overlay or {})
    overlay.update(file=str(path), source='file', custom_load=False)
    return overlay
