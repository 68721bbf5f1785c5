"""Runtime changes through the Learner (issue 3): an algorithm or storage parameter, or a whole
component (train env, test env, storage), changed in every worker that uses it, acknowledged by
name, and recorded as a :class:`Change`. Validated first, so a bad change changes nothing anywhere.
A mixin of :class:`~colonyrl.scheme.learner.Learner`, which owns the attributes used here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = ["Change", "RuntimeChanges", "MAX_KEPT_CHANGES"]


class Change(NamedTuple):
    """A runtime change: what, to which value, when it took effect, and who acknowledged it."""

    kind: str  # "algo" / "storage" for parameters; "env" / "test_env" / "storage" for components
    name: str  # parameter name, or "component"
    value: Any
    env_steps: int
    version: int
    workers: tuple[str, ...]


#: Runtime changes the Learner keeps in memory (the newest); a linear schedule makes one per update,
#: so a run of days would otherwise grow without bound. ``train()`` streams every change to MLflow
#: and to ``changes.log`` as it happens (``changes_since``).
MAX_KEPT_CHANGES = 1000


class RuntimeChanges:
    """``update_algorithm_parameter``, ``update_storage_parameter``, ``replace_component``."""

    def update_algorithm_parameter(self, name: str, value: Any) -> Change:
        """Change an algorithm hyperparameter (e.g. ``lr``) in every worker that uses it (every
        GWorker; CWorkers only if acting uses it); acknowledged by each of them."""
        return self._update_parameter("algo", name, value)

    def update_storage_parameter(self, name: str, value: Any) -> Change:
        """Change a storage parameter (e.g. ``gamma``) in every worker that uses it; acknowledged."""
        return self._update_parameter("storage", name, value)

    def replace_component(self, kind: str, config: Any) -> Change:
        """Replace the train env (a curriculum step), the test env or the storage, everywhere."""
        components = self.components.with_component(kind, config)  # raises before anything changes
        self.gworkers.components = components  # a GWorker re-created from now on is built with it
        acks = self._acknowledged(f"replace_component{(kind, config)}", self.gworkers.replace_component(kind, config))
        self.components = components
        return self._record(kind, "component", config, acks)

    def _update_parameter(self, kind: str, name: str, value: Any) -> Change:
        components = self.components.with_parameter(kind, name, value)  # raises before anything changes
        if kind == "algo":
            self.algo.update_parameter(name, value)
        self.gworkers.components = components
        # CWorkers are told only what collection uses (the algorithm and storage declare it).
        expected = (self.worker_names if components.used_in_collection(kind, name) else self.gworkers.names)
        acks = self._acknowledged(f"update_parameter{(kind, name)}", self.gworkers.update_parameter(kind, name, value),
                                  expected)
        self.components = components
        return self._record(kind, name, value, acks)

    def _acknowledged(self, what: str, per_gworker: Sequence[Sequence[str]],
                      expected: Sequence[str] | None = None) -> tuple[str, ...]:
        """The names of the workers that applied a change (per GWorker: it and its CWorkers); every
        ``expected`` worker (default: all) must be among them."""
        acks = tuple(name for names in per_gworker for name in names)
        missing = set(self.worker_names if expected is None else expected) - set(acks)
        if missing:
            raise RuntimeError(f"{what} was not acknowledged by {sorted(missing)}")
        return acks

    def _record(self, kind: str, name: str, value: Any, acks: tuple[str, ...]) -> Change:
        change = Change(kind, name, value, self.env_steps, self.version, acks)
        self.changes.append(change)
        self.num_changes += 1
        if len(self.changes) > 2 * MAX_KEPT_CHANGES:  # trimmed in blocks: amortized O(1) per change
            del self.changes[:-MAX_KEPT_CHANGES]
        return change

    def changes_since(self, count: int) -> list[Change]:
        """The changes made after the first ``count`` (of ``num_changes``) that are still kept."""
        new = self.num_changes - count
        return self.changes[len(self.changes) - min(new, len(self.changes)):] if new > 0 else []

