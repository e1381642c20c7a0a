"""Model and file ids: a Hugging Face Hub id, a local path, or `SCHEME://NAME`, which the
module that registered SCHEME resolves to a local folder or file.

The core never knows what a scheme holds: the embedded toy models and data register
`tiny://` (synth_ray/toy/registry.py), and a user's package can register its own through
the `synth_ray.schemes` entry point group (a callable that calls `register_scheme`). A
scheme's provider is imported the first time one of its ids is resolved, in whichever
process resolves it (the driver, a Ray Train worker, an engine actor).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path

# Shipped providers, imported on first use (a string, so that importing this module never
# imports the toy package).
BUILTIN_PROVIDERS = {"tiny": "synth_ray.toy.registry"}
ENTRY_POINT_GROUP = "synth_ray.schemes"


@dataclass(frozen=True)
class Scheme:
    """What one scheme resolves: `model(name)` -> a model folder; `files(name)` -> the
    file(s) of a dataset or prompt set (None: the scheme holds no files); `prepare(names)`
    builds several models at once before a run (None: nothing to prepare)."""

    name: str
    model: Callable[[str], Path] | None = None
    files: Callable[[str], list[Path]] | None = None
    prepare: Callable[[list[str]], None] | None = None
    # names not built here whose build takes a training run (pre-training, fine-tuning):
    # a node must have them already, or it would train its own, other weights
    unbuilt: Callable[[list[str]], list[str]] | None = None


_SCHEMES: dict[str, Scheme] = {}
_LOCK = threading.Lock()
_entry_points_loaded = False


def register_scheme(name: str, model: Callable[[str], Path] | None = None,
                    files: Callable[[str], list[Path]] | None = None,
                    prepare: Callable[[list[str]], None] | None = None,
                    unbuilt: Callable[[list[str]], list[str]] | None = None) -> None:
    """Make `name://...` ids resolvable in this process."""
    _SCHEMES[name] = Scheme(name, model, files, prepare, unbuilt)


def cache_root() -> Path:
    """Where built models, corpora and run mirrors are cached: `$SYNTH_RAY_CACHE`, default
    `~/.cache/synth-ray`."""
    return Path(os.environ.get("SYNTH_RAY_CACHE", Path.home() / ".cache" / "synth-ray"))


def scheme_of(uri: str) -> str | None:
    """'tiny' for 'tiny://x'; None for a hub id, a local path or a bucket URI that no
    provider claims (s3://, gs:// are storage, not model schemes)."""
    if "://" not in uri:
        return None
    name = uri.split("://", 1)[0]
    return name if name in _known() else None


def _known() -> set[str]:
    _load_entry_points()
    return set(_SCHEMES) | set(BUILTIN_PROVIDERS)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    with _LOCK:
        if _entry_points_loaded:
            return
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            ep.load()()  # a provider whose import fails should fail loudly, not vanish
        _entry_points_loaded = True


def _scheme(uri: str) -> tuple[Scheme, str]:
    name, rest = uri.split("://", 1)
    if name not in _SCHEMES and name in BUILTIN_PROVIDERS:
        with _LOCK:
            if name not in _SCHEMES:
                import_module(BUILTIN_PROVIDERS[name]).register()
    if name not in _SCHEMES:
        raise ValueError(f"{uri!r}: no provider registered the scheme {name!r}://; "
                         f"registered: {sorted(_known())}")
    return _SCHEMES[name], rest


def is_scheme_id(uri: str) -> bool:
    """Whether `uri` names something a registered scheme holds (built or bundled locally)."""
    return scheme_of(uri) is not None


def resolve_model(uri: str) -> str:
    """SCHEME://NAME -> a built local folder; a hub id or an existing path as it is."""
    if is_scheme_id(uri):
        scheme, name = _scheme(uri)
        if scheme.model is None:
            raise ValueError(f"{uri!r}: the {scheme.name}:// scheme holds no models")
        return str(scheme.model(name))
    if uri.startswith(("/", ".", "~")) and not Path(uri).expanduser().exists():
        # a path, not a hub id: fail here with its name, not deep inside an engine actor
        raise FileNotFoundError(f"model path {uri} does not exist")
    return uri


def resolve_files(uri: str) -> list[Path] | None:
    """SCHEME://NAME -> its file(s); None for anything that is not a scheme id (a local path
    or a hub id, which the data loaders resolve themselves)."""
    if not is_scheme_id(uri):
        return None
    scheme, name = _scheme(uri)
    if scheme.files is None:
        raise ValueError(f"{uri!r}: the {scheme.name}:// scheme holds no files")
    return scheme.files(name)


def prepare(uris: Iterable[str]) -> None:
    """Let each scheme build, at once, the models of `uris` it holds (the toy scheme
    pre-trains all of a config's models in one Ray Tune grid instead of one by one as the
    stages resolve them)."""
    for scheme, names in _by_scheme(uris):
        if scheme.prepare is not None:
            scheme.prepare(names)


def unbuilt(uris: Iterable[str]) -> list[str]:
    """The scheme ids among `uris` that this node has not built and could only build by a
    training run of its own (the toy scheme's pre-trained models and SmolLM2 variants)."""
    return [f"{scheme.name}://{n}" for scheme, names in _by_scheme(uris)
            if scheme.unbuilt is not None for n in scheme.unbuilt(names)]


def _by_scheme(uris: Iterable[str]) -> list[tuple[Scheme, list[str]]]:
    by_scheme: dict[str, list[str]] = {}
    for uri in dict.fromkeys(uris):
        if is_scheme_id(uri):
            by_scheme.setdefault(uri.split("://", 1)[0], []).append(uri.split("://", 1)[1])
    return [(_scheme(f"{name}://")[0], names) for name, names in by_scheme.items()]
