"""Model lifecycle: what is loaded at start, and ModelController, which loads, swaps and unloads versions while the
server serves (--model-control-mode poll: a rescan every --repository-poll-secs; explicit: RepositoryModelLoad/Unload).

One rule everywhere: a version is validated, loaded and warmed off the event loop, beside whatever serves, and
enters the repository only once READY, in one step on the event loop; a version that leaves (removed folder,
changed files replaced by their new load, unload, version policy) first stops getting new requests, then its
queued and running requests finish, then its batcher threads stop and its onnxruntime session is released. A
folder is re-read only when its files change (inode, size, mtime), and a load whose files changed while they were
read is thrown away and retried at the next scan, so a folder being written is never served half-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TypeVar

from cnnserve.card import CARD_FILE, MODEL_FILE
from cnnserve.server import default_model
from cnnserve.server.config import ServerConfig
from cnnserve.server.errors import (
    DrainingError,
    ModelControlError,
    ModelLoadError,
    ModelNotFoundError,
    PolicyError,
    ProviderError,
    StartupError,
)
from cnnserve.server.policy import VersionPolicy
from cnnserve.server.repository import ModelRepository, ModelStatus, ServedModel, load_version

logger = logging.getLogger(__name__)

Entry = ServedModel | ModelStatus
T = TypeVar("T")
_SKIPPED: tuple[int, ...] = (-1,)  # the fingerprint of a version the policy leaves out (decided by policy.json)
_DRAIN_POLL_S = 0.005  # how often a retiring version looks whether its last request ended
NOT_LOADED = "not loaded: --model-control-mode explicit loads a model on RepositoryModelLoad (or --load-model)"
UNLOADED = "unloaded by RepositoryModelUnload"


# --- reading the repository (plain functions: they run on a thread) ---------------------------------------------


def model_names(root: Path) -> list[str]:
    """The model folders under the repository root (hidden ones, such as the exporter's staging, skipped)."""
    try:
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except FileNotFoundError:
        return []


def version_folders(model_dir: Path) -> dict[int, Path]:
    """version -> folder, for the positively numbered folders of one model."""
    try:
        children = sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found = {}
    for child in children:
        if not child.name.isdigit() or int(child.name) < 1:
            logger.debug("skipping %s: a version folder is named by a positive integer", child)
            continue
        found[int(child.name)] = child
    return found


def fingerprint(folder: Path) -> tuple[int, ...]:
    """(inode, size, mtime ns) of the folder and of both files: any rename into place or rewrite changes it."""
    values: list[int] = []
    for path in (folder, folder / MODEL_FILE, folder / CARD_FILE):
        try:
            st = os.stat(path)
            values += [st.st_ino, st.st_size, st.st_mtime_ns]
        except OSError:
            values += [0, 0, 0]
    return tuple(values)


def plan_model(
    name: str,
    model_dir: Path,
    config: ServerConfig,
    current: dict[int, Entry],
    retry_failed: bool = False,
    serving: bool = True,
) -> dict[int, Entry]:
    """The versions `name` should have now: the current ServedModel where its files are unchanged, a new load
    where they are new or changed (a failed reload keeps the old one serving), the version policy applied.
    Runs on a thread; loads that are not kept are closed here. {} when the model folder is gone."""
    folders = version_folders(model_dir)
    try:
        policy = VersionPolicy.read(model_dir)
    except PolicyError as exc:
        if not any(isinstance(e, ModelStatus) and e.reason == str(exc) for e in current.values()):  # once, not per scan
            logger.error("model %s: %s; versions already loaded keep serving", name, exc)
        return {
            v: old
            if isinstance(old := current.get(v), ServedModel)
            else ModelStatus(name, v, "UNAVAILABLE", str(exc), fingerprint=_SKIPPED)
            for v in folders
        }
    candidates = policy.candidates(list(folders))
    plan: dict[int, Entry] = {}
    ready = 0
    for version in candidates:
        if policy.kind == "latest" and ready >= policy.latest:
            reason = f"not loaded: the version policy ({policy.describe()}) serves higher versions"
            plan[version] = ModelStatus(name, version, "UNAVAILABLE", reason, fingerprint=_SKIPPED)
            continue
        entry = _version_now(name, version, folders[version], config, current.get(version), retry_failed, serving)
        ready += isinstance(entry, ServedModel)
        plan[version] = entry
    for version in folders:
        if version not in plan:
            reason = f"not loaded: the version policy ({policy.describe()}) does not choose it"
            plan[version] = ModelStatus(name, version, "UNAVAILABLE", reason, fingerprint=_SKIPPED)
    return plan


def pending_loads(model_dir: Path, current: dict[int, Entry], retry_failed: bool) -> list[int]:
    """The versions without a serving entry that plan_model is about to read (shown LOADING meanwhile)."""
    pending = []
    for version, folder in version_folders(model_dir).items():
        old = current.get(version)
        if isinstance(old, ServedModel):
            continue
        known = isinstance(old, ModelStatus) and bool(old.fingerprint) and not retry_failed
        if known and old is not None and (old.fingerprint is _SKIPPED or old.fingerprint == fingerprint(folder)):
            continue
        pending.append(version)
    return pending


def _version_now(
    name: str, version: int, folder: Path, config: ServerConfig, old: Entry | None, retry_failed: bool, serving: bool
) -> Entry:
    seen = fingerprint(folder)
    if isinstance(old, ServedModel) and (
        old.fingerprint == seen or (old.failed_reload is not None and old.failed_reload[0] == seen)
    ):
        return old
    if isinstance(old, ModelStatus) and old.fingerprint == seen and not retry_failed:
        return old
    try:
        loaded = load_version(name, version, folder, config)
    except ProviderError as exc:
        if not serving:
            raise  # at start-up, --device cuda without CUDA stops the server; later it is this version's reason
        logger.error("model %s version %d is UNAVAILABLE: %s", name, version, exc)
        loaded = ModelStatus(name, version, "UNAVAILABLE", str(exc))
    if fingerprint(folder) != seen:  # written while it was read: forget this load, look again next time
        if isinstance(loaded, ServedModel):
            loaded.close()
        logger.info("model %s version %d changed while it loaded; it is read again at the next scan", name, version)
        if isinstance(old, ServedModel):
            return old
        return ModelStatus(name, version, "UNAVAILABLE", "its files were being written; read again at the next scan")
    if isinstance(loaded, ServedModel):
        loaded.fingerprint = seen
        return loaded
    if isinstance(old, ServedModel):  # the changed files fail: the version keeps serving what it loaded before
        logger.error("model %s version %d keeps serving its previous files: %s", name, version, loaded.reason)
        old.failed_reload = (seen, loaded.reason)
        reason = f"serving its previous files; the new ones fail: {loaded.reason}"
        old.status = ModelStatus(name, version, "READY", reason)
        return old
    return ModelStatus(name, version, "UNAVAILABLE", loaded.reason, fingerprint=seen)


def load_repository(config: ServerConfig) -> ModelRepository:
    """What the server loads at start: every model (none, poll) or the --load-model ones (explicit, the others
    listed as not loaded). StartupError when the root is not a folder, or (mode none) holds no version."""
    root = config.model_repository
    if not root.is_dir():
        raise StartupError(
            f"model repository {root} is not a folder; expected <repository>/<model>/<version>/{MODEL_FILE}"
        )
    from_file = default_model.read_default_file(root)  # a broken file fails before anything loads
    names = model_names(root)
    load_all = config.model_control_mode != "explicit" or "*" in config.load_model
    wanted = set(names) if load_all else set(config.load_model)
    missing = sorted(wanted - set(names))
    if missing:
        raise StartupError(f"--load-model {', '.join(missing)}: not in {root}; it has: {', '.join(names) or 'nothing'}")
    models: dict[str, dict[int, Entry]] = {}
    for name in names:
        if name in wanted:
            models[name] = plan_model(name, root / name, config, {}, serving=False)
        else:
            models[name] = {v: ModelStatus(name, v, "UNAVAILABLE", NOT_LOADED) for v in version_folders(root / name)}
    models = {name: versions for name, versions in models.items() if versions}
    if not models and config.model_control_mode == "none":
        raise StartupError(
            f"model repository {root} holds no model versions; expected <model>/<version>/{MODEL_FILE} "
            f"and {CARD_FILE} below it"
        )
    default_model.check(config.default_model, from_file, models, root)
    return ModelRepository(config, models, from_file)


def _status(entry: Entry) -> ModelStatus:
    return entry.status if isinstance(entry, ServedModel) else entry


# --- changes while serving ---------------------------------------------------------------------------------------


class ModelController:
    """Applies repository changes on the server's event loop, one at a time (polls and explicit calls queue on
    one lock). `on_change` is awaited after each change (health follows the repository)."""

    def __init__(
        self, config: ServerConfig, repository: ModelRepository, on_change: Callable[[], Awaitable[None]]
    ) -> None:
        self.config = config
        self.repository = repository
        self._on_change = on_change
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._stopped = False
        # Loads and closes run here, one at a time (they hold the lock anyway): one long-lived thread, rather than
        # the default executor's, which grows with use.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnnserve-models")

    async def _thread(self, function: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    @property
    def explicit(self) -> bool:
        return self.config.model_control_mode == "explicit"

    def start(self) -> None:
        """Begin polling (mode poll); call on the server's loop once it serves."""
        if self.config.model_control_mode == "none":
            return
        self._executor.submit(lambda: None)  # its thread starts now, not during the first change
        if self.config.model_control_mode == "poll":
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever(), name="cnnserve-poll")

    def refuse_changes(self) -> None:
        """From now on loads, unloads and polls change nothing (the server began draining)."""
        self._stopped = True

    async def stop(self) -> None:
        """No more changes (draining); versions already retiring finish draining and are closed."""
        self._stopped = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        async with self._lock:  # a change under way completes first
            pass
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        self._executor.shutdown(wait=False)

    async def poll_once(self) -> None:
        """Rescan the whole repository and apply what changed."""
        async with self._lock:
            if self._stopped:
                return
            root = self.config.model_repository
            names = await self._thread(partial(model_names, root))
            for name in sorted(set(names) | set(self.repository.names())):
                await self._reconcile(name, retry_failed=False)

    async def refresh_index(self) -> None:
        """Explicit mode: list model folders added since start as not loaded (RepositoryIndex shows them)."""
        if not self.explicit or self._stopped:
            return
        root = self.config.model_repository
        # Without the lock, so the index never waits for a load: it only adds names nobody has touched yet.
        for name in await self._thread(partial(model_names, root)):
            if name not in self.repository.names():
                folders = await self._thread(partial(version_folders, root / name))
                if folders and name not in self.repository.names():  # a load may have begun meanwhile
                    entries: dict[int, Entry] = {v: ModelStatus(name, v, "UNAVAILABLE", NOT_LOADED) for v in folders}
                    self.repository.set_entries(name, entries)

    async def load(self, name: str) -> None:
        """Explicit load (or reload) of every version the model's policy chooses; returns once they are READY.
        ModelNotFoundError when there is no such folder, ModelLoadError when no version loads (with reasons)."""
        self._check_explicit("RepositoryModelLoad")
        root = self.config.model_repository
        if not name or "/" in name or name.startswith(".") or not (root / name).is_dir():
            names = await self._thread(partial(model_names, root))
            raise ModelNotFoundError(
                f"cannot load {name!r}: no such model folder in the repository; it has: {', '.join(names) or 'nothing'}"
            )
        async with self._lock:
            self._check_running()
            await self._reconcile(name, retry_failed=True)
        entries = self.repository.entries(name)
        if not any(isinstance(e, ServedModel) for e in entries.values()):
            reasons = "; ".join(f"version {v}: {_status(e).reason}" for v, e in entries.items()) or "no version folders"
            raise ModelLoadError(f"model {name!r} did not load: {reasons}")

    async def unload(self, name: str) -> None:
        """Explicit unload: new requests stop at once; returns once its queued and running requests finished and
        its sessions are released. ModelNotFoundError for a model the repository does not know."""
        self._check_explicit("RepositoryModelUnload")
        async with self._lock:
            self._check_running()
            entries = self.repository.entries(name)
            if not entries:
                raise ModelNotFoundError(
                    f"cannot unload {name!r}: unknown model; this server has: {', '.join(self.repository.names())}"
                )
            retiring = await self._apply(name, {v: ModelStatus(name, v, "UNAVAILABLE", UNLOADED) for v in entries})
        if retiring:
            await asyncio.gather(*retiring)

    # --- inside -------------------------------------------------------------------------------------------------

    def _check_explicit(self, rpc: str) -> None:
        if not self.explicit:
            raise ModelControlError(
                f"{rpc} needs --model-control-mode explicit; this server runs with "
                f"--model-control-mode {self.config.model_control_mode}"
            )

    def _check_running(self) -> None:
        if self._stopped:
            raise DrainingError("the server is shutting down and changes no models; retry on another server")

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.repository_poll_secs)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a scan that fails (permissions, a vanished folder) is retried at the next poll
                logger.exception("repository poll failed; retrying in %.1f s", self.config.repository_poll_secs)

    async def _reconcile(self, name: str, retry_failed: bool) -> None:
        current = self.repository.entries(name)
        model_dir = self.config.model_repository / name
        pending = await self._thread(partial(pending_loads, model_dir, current, retry_failed))
        if pending:  # RepositoryIndex shows what is being read; requests naming those versions get UNAVAILABLE
            loading = {v: ModelStatus(name, v, "LOADING", "being validated, loaded and warmed") for v in pending}
            self.repository.set_entries(name, {**current, **loading})
        plan = await self._thread(partial(plan_model, name, model_dir, self.config, current, retry_failed))
        if self._stopped:  # the server began draining while this loaded: nothing new may start serving
            for entry in plan.values():
                if isinstance(entry, ServedModel) and all(entry is not old for old in current.values()):
                    await self._thread(entry.close)
            self.repository.set_entries(name, current)
            return
        await self._apply(name, plan)

    async def _apply(self, name: str, plan: dict[int, Entry]) -> list[asyncio.Task[None]]:
        """Swap `name`'s versions for `plan` in one step; retire the ServedModels that left. Returns their tasks."""
        old = self.repository.entries(name)
        kept = {id(e) for e in plan.values()}
        leaving = {v: e for v, e in old.items() if isinstance(e, ServedModel) and id(e) not in kept}
        final = dict(plan)
        for version in leaving:  # still listed after it drained: UNLOADING until then
            after = plan.get(version)
            if isinstance(after, ModelStatus):
                plan = {**plan, version: ModelStatus(name, version, "UNLOADING", after.reason, after.fingerprint)}
        self.repository.set_entries(name, plan)
        retiring = []
        for version, served in sorted(leaving.items()):
            task = asyncio.get_running_loop().create_task(
                self._retire(served, name, plan.get(version), final.get(version)), name=f"retire-{name}-{version}"
            )
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            retiring.append(task)
        for version, entry in sorted(plan.items()):
            before = old.get(version)
            if entry is not before:
                if isinstance(entry, ServedModel):
                    logger.info("model %s version %d is READY on %s and takes traffic", name, version, entry.provider)
                elif before is None or isinstance(before, ServedModel) or before.reason != entry.reason:
                    logger.info("model %s version %d is %s: %s", name, version, entry.state, entry.reason)
        for version in sorted(set(old) - set(plan)):
            logger.info("model %s version %d left the repository", name, version)
        if plan != old or retiring:
            await self._on_change()
        return retiring

    async def _retire(self, served: ServedModel, name: str, unloading: Entry | None, final: Entry | None) -> None:
        """Wait for the version's last request (queued, running or inside a handler), then close it; its UNLOADING
        status (if it is still the one listed) becomes `final`."""
        stats = served.stats
        while stats.pending or stats.active:
            await asyncio.sleep(_DRAIN_POLL_S)
        served.batcher.draining = True  # nothing can reach it any more; this only makes sure
        await self._thread(served.close)
        entries = self.repository.entries(name)
        if unloading is not None and final is not None and entries.get(served.version) is unloading:
            self.repository.set_entries(name, {**entries, served.version: final})
            await self._on_change()
        logger.info("model %s version %d unloaded (drained, session released)", served.name, served.version)
