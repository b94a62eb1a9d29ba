"""YAML from outside (CAD metadata files, service requests): :func:`load_yaml`, the safe loader
with a size limit and an alias-expansion limit.
"""
from __future__ import annotations

#: largest YAML text :func:`load_yaml` reads [bytes]
YAML_MAX_BYTES = 256 * 1024
#: most nodes of the document once every alias is expanded (a "billion laughs" stops here)
YAML_MAX_NODES = 100_000


def load_yaml(text, *, name: str = "YAML", max_bytes: int = YAML_MAX_BYTES, max_nodes: int = YAML_MAX_NODES):
    """Parse YAML that came from outside with the safe loader (plain data only, no ``!!python``
    tags), refusing a text over ``max_bytes`` and a document that expands, through its aliases,
    to more than ``max_nodes`` nodes -- counted on the parsed node graph before anything is built,
    so the check costs time and memory in proportion to the text.

    Args:
        text: the YAML text (``str`` or ``bytes``).
        name: what to call it in errors (a file name, ``"metadata_yaml"``).

    Returns:
        the document (``None`` for an empty one).

    Raises:
        ValueError: too large, not valid YAML, too deeply nested, or expanding too far.
    """
    import yaml

    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > max_bytes:
        raise ValueError(f"{name} is {size} bytes; the limit is {max_bytes} bytes")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}
        open_: set[int] = set()
        stack = [(node, False)]
        while stack:  # expanded size per node, each shared (aliased) node counted once per use
            n, done = stack.pop()
            kids = ([c for kv in n.value for c in kv] if isinstance(n, yaml.MappingNode) else
                    n.value if isinstance(n, yaml.SequenceNode) else [])
            if done:
                open_.discard(id(n))
                sizes[id(n)] = min(1 + sum(sizes[id(k)] for k in kids), max_nodes + 1)
                continue
            if id(n) in sizes:
                continue
            if id(n) in open_:
                raise ValueError(f"{name} contains a recursive alias: refused")
            open_.add(id(n))
            stack.append((n, True))
            stack.extend((k, False) for k in kids if id(k) not in sizes)
        if sizes[id(node)] > max_nodes:
            raise ValueError(f"{name} expands to more than {max_nodes} YAML nodes through its aliases "
                             "(an alias bomb?): refused")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ValueError(f"{name} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ValueError(f"{name} is nested too deeply") from None
    finally:
        loader.dispose()
