"""Plug-ins: a config node ``{_target_: some.module.Class, ...settings}`` built into a typed object.

Pruning methods, healers, scorers and trackers are plug-ins. The class is a dataclass; its
fields are the node's keys, typed. ``build`` merges the node into the class's structured
schema first, so a misspelt key or a value of the wrong type is a one-line error that names it,
then instantiates the class (its ``__post_init__`` checks ranges). A class that sets
``ignores_settings = True`` (the "do nothing" choices, which an experiment sweeping several
plug-ins gives the others' settings) drops keys it does not have. A plug-in defined outside
``src/`` (named by its YAML's ``_target_``) needs no edit in the library.
"""

from __future__ import annotations

from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from layerprune.errors import LayerpruneError

T = TypeVar("T")


def build(node: Any, base: type[T], group: str) -> T:
    """The ``base`` subclass instance that ``node`` describes (``group`` names it in errors)."""
    if isinstance(node, base):
        return node
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict):
        raise LayerpruneError(f"{group}: expected a config node with a _target_, got {node!r}")
    settings = dict(node)
    target = settings.pop("_target_", None)
    if not target:
        raise LayerpruneError(
            f"{group} has no _target_: each conf/{group}/*.yaml names its class "
            f"(a subclass of {base.__module__}.{base.__name__})"
        )
    from hydra.utils import get_class

    try:
        cls = get_class(target)
    except Exception as e:  # ImportError, AttributeError: say which target
        raise LayerpruneError(f"{group}: cannot import _target_ {target}: {_first(e)}") from e
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise LayerpruneError(f"{group}: {target} is not a {base.__name__} subclass")
    if getattr(cls, "ignores_settings", False):  # e.g. healing=none in a sweep over healers
        from dataclasses import fields

        names = {f.name for f in fields(cls)}
        settings = {k: v for k, v in settings.items() if k in names}
    try:
        typed = OmegaConf.merge(OmegaConf.structured(cls), settings)
        return OmegaConf.to_object(typed)  # runs the class's __post_init__
    except LayerpruneError:
        raise
    except Exception as e:  # omegaconf's errors name the key: keep their first line
        raise LayerpruneError(f"{group} ({target}): {_first(e)}") from e


def settings(obj: Any) -> dict[str, Any]:
    """A plug-in's settings as a plain dict (its dataclass fields), for identities and logs."""
    from dataclasses import fields

    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _first(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]
