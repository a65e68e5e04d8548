"""Where Poodle keeps its files.

Two kinds of data live apart so each can be relocated on its own:

* the large, shareable model cache (prepared base models, the model store with the zoo and
  its feature cache) under ``POODLE_HOME`` (default ``~/.cache/poodle``);
* per-deployment state (the task registry, the Arrow request logs, trained surrogates, the
  running server's address, worker logs) under ``POODLE_STATE_DIR`` (default
  ``$POODLE_HOME/state``).

Tests point ``POODLE_STATE_DIR`` at a fresh temporary folder and keep the shared models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


@dataclass(frozen=True)
class PoodlePaths:
    """Resolved locations; build with :func:`resolve_paths` (reads the environment once)."""

    home: Path
    """Root of the shareable cache (``POODLE_HOME``)."""
    models: Path
    """Prepared base models (SmolLM2, packaged encoders), one HF folder each (``POODLE_MODELS_DIR``)."""
    store: Path
    """The model store: candidate encoders, catalog, fingerprints, feature cache (``POODLE_STORE_DIR``)."""
    state: Path
    """Per-deployment state (``POODLE_STATE_DIR``)."""

    @property
    def registry(self) -> Path:
        """SQLite task registry (WAL mode), shared by engine, API server, worker and CLI."""
        return self.state / "registry.sqlite"

    @property
    def logs(self) -> Path:
        """Arrow IPC request logs, one writer (the engine process) per file."""
        return self.state / "logs"

    @property
    def surrogates(self) -> Path:
        """Trained surrogates: ``surrogates/<task_id>/v<N>/`` HF folders plus ``poodle.json``."""
        return self.state / "surrogates"

    @property
    def server_file(self) -> Path:
        """JSON with the running server's address and pid, written by ``poodle serve``."""
        return self.state / "server.json"

    def ensure(self) -> PoodlePaths:
        """Create the folders, raising a clear error if they cannot be written."""
        for p in (self.home, self.models, self.store, self.state, self.logs, self.surrogates):
            try:
                p.mkdir(parents=True, exist_ok=True)
                probe = p / ".poodle-write-test"
                probe.write_text("ok")
                probe.unlink()
            except OSError as exc:
                raise PermissionError(
                    f"Poodle cannot write to {p} ({exc.strerror}). Set POODLE_HOME (shared models) "
                    f"or POODLE_STATE_DIR (per-deployment state) to a writable folder."
                ) from exc
        return self


def resolve_paths(
    home: str | os.PathLike[str] | None = None, state: str | os.PathLike[str] | None = None
) -> PoodlePaths:
    """Resolve all locations from arguments, then the environment, then defaults."""
    root = Path(home).expanduser() if home else _env_path("POODLE_HOME", Path.home() / ".cache" / "poodle")
    state_dir = Path(state).expanduser() if state else _env_path("POODLE_STATE_DIR", root / "state")
    return PoodlePaths(
        home=root,
        models=_env_path("POODLE_MODELS_DIR", root / "models"),
        store=_env_path("POODLE_STORE_DIR", root / "store"),
        state=state_dir,
    )


def data_dir() -> Path:
    """Labelled datasets (``POODLE_DATA_DIR``, default ``../shared/data`` beside the repository)."""
    return _env_path("POODLE_DATA_DIR", REPO_ROOT.parent / "shared" / "data")
