"""Settings grouped by stage: what :class:`~cosarad_ros.core.anomaly.config.DetectorConfig` and
:class:`~cosarad_ros.core.registration.options.RegisterOptions` share.

A grouped configuration is a frozen dataclass whose fields are frozen dataclasses, one per stage
(:class:`GroupedSettings` names them in ``GROUPS``). Each group checks its own values when built
and raises a ``ValueError`` naming the bad field (:func:`set_field`, :func:`finite` help with
that). Flat option names (the fields of the groups, which are unique across a configuration) go
to the group that holds them, so a configuration is also written as one flat dict, as a config
file or a command line gives it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import numpy as np

__all__ = ["GroupedSettings", "finite", "set_field", "build_named"]


def set_field(obj, name: str, value) -> None:
    """Set ``name`` on a frozen dataclass instance (in ``__post_init__``, to store a checked value)."""
    object.__setattr__(obj, name, value)


def finite(value, name: str) -> float:
    """``value`` as a finite float.

    Raises:
        ValueError: not a number, or not finite (naming ``name``).
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value}")
    return v


class GroupedSettings:
    """Base of a frozen dataclass whose fields are groups of settings.

    Subclasses set ``GROUPS`` (field name -> group class), ``KIND`` (what the options are of, for
    errors), and optionally ``REMOVED`` (former option -> what replaced it) and ``HINT`` (appended
    to the error for an unknown option).
    """

    GROUPS: ClassVar[dict] = {}
    KIND: ClassVar[str] = ""
    REMOVED: ClassVar[dict] = {}
    HINT: ClassVar[str] = ""

    def __post_init__(self):
        for name, cls in self.GROUPS.items():
            value = getattr(self, name)
            if isinstance(value, Mapping):
                set_field(self, name, cls(**value))
            elif not isinstance(value, cls):
                raise ValueError(f"{name} must be a {cls.__name__} or a dict of its fields, got {type(value).__name__}")

    @classmethod
    def option_names(cls) -> dict[str, str]:
        """Flat option name -> the group holding it."""
        return {f.name: group for group, g in cls.GROUPS.items() for f in dataclasses.fields(g)}

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None):
        """The defaults with flat ``options`` (``{"name": value}``) set in their groups; a group
        name with a dict (``{"group": {"name": value}}``) sets several at once.

        Raises:
            ValueError: an unknown option (naming it) or a bad value (naming the field).
        """
        return cls().with_options(**dict(options or {}))

    def with_options(self, **options):
        """A copy with the flat ``options`` (or group dicts) replaced; see :meth:`from_options`."""
        groups = self.GROUPS
        where = self.option_names()
        unknown = sorted(k for k in options if k not in where and k not in groups)
        if unknown:
            notes = "".join(f"; {k} was removed: {self.REMOVED[k]}" for k in unknown if k in self.REMOVED)
            raise ValueError(f"unknown {self.KIND} options {unknown}{notes}; allowed: {sorted(where)}{self.HINT}")
        per_group: dict[str, dict] = {}
        for k, v in options.items():
            if k in groups:
                if not isinstance(v, Mapping):
                    raise ValueError(f"{k} must be a dict of {groups[k].__name__} fields, got {type(v).__name__}")
                bad = sorted(set(v) - {f.name for f in dataclasses.fields(groups[k])})
                if bad:
                    raise ValueError(f"unknown {groups[k].__name__} fields {bad}")
                per_group.setdefault(k, {}).update(v)
            else:
                per_group.setdefault(where[k], {})[k] = v
        return dataclasses.replace(self, **{g: dataclasses.replace(getattr(self, g), **kv)
                                            for g, kv in per_group.items()})

    def options(self) -> dict[str, Any]:
        """All settings as one flat dict (option name -> value)."""
        return {f.name: getattr(getattr(self, g), f.name) for g, cls in self.GROUPS.items()
                for f in dataclasses.fields(cls)}


def build_named(config, registry: Mapping[str, type], *, base: type, config_name: str, kind: str,
                key: str = "method"):
    """One of a family of swappable parts from its config: a name (``"point_to_plane"``), a dict
    ``{key: name, **constructor kwargs}``, or an instance of ``base`` passed through.

    Args:
        config: the name, dict or instance.
        registry: method name -> class.
        base: the family's interface (instances of it are returned as they are).
        config_name: what the config is called in errors (``"refiner config"``).
        kind: what the method names (``"refinement"``).
        key: the dict entry that names the method (``"method"``; cover solvers: ``"type"``).

    Raises:
        ValueError: a config that is neither, an unknown method (naming the choices), or
            arguments its constructor does not take.
    """
    if isinstance(config, base):
        return config
    if isinstance(config, str):
        config = {key: config}
    if not isinstance(config, dict) or key not in config:
        raise ValueError(f"{config_name} must be a name or a dict with '{key}', got {config!r}")
    kwargs = dict(config)
    name = kwargs.pop(key)
    if name not in registry:
        raise ValueError(f"unknown {kind} method {name!r}; choose from {sorted(registry)}")
    try:
        return registry[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for {kind} method {name!r}: {exc}") from exc
