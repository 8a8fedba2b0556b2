"""Safe YAML reading for configs: a SafeLoader that also reads ``1e-3`` as a float, and key -> line lookup.

PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a *string*; every config author writes learning rates that
way, so the loader adds the YAML 1.2 float pattern.  Nothing here can construct Python objects (no ``eval``, no
``!!python`` tags): the base class is :class:`yaml.SafeLoader`.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import yaml


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 scalars: ``1e-3`` is a float; only true/false are booleans.

    (YAML 1.1 reads ``off``, ``no``, ``on``, ``yes`` as booleans, which breaks ``amp: off``.)
    """


_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_BOOL_12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
# replace the YAML 1.1 float and bool resolvers by the YAML 1.2 ones
ConfigLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:float", "tag:yaml.org,2002:bool")]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_12, list("tTfF"))


def safe_load(text: str) -> Any:
    """Parse YAML text with :class:`ConfigLoader` (safe: plain data only)."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - ConfigLoader derives from SafeLoader


def key_line(text: str, path: Sequence[str | int]) -> int | None:
    """1-based line of the key (or list item) at ``path`` in the YAML ``text``; ``None`` when not found.

    Used only to point error messages at a line: any parse problem answers ``None``.
    """
    try:
        node = yaml.compose(text, Loader=ConfigLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
