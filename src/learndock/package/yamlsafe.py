"""Reading YAML from uploads with caps checked *before* any object is built.

``yaml.safe_load`` never runs code, but it happily builds what an attacker describes: a few KB
of anchors and aliases (``&a [*b, *b, ...]``) describe billions of nodes. The safe loader
shares aliased objects, so the bomb only goes off later -- when the manifest is validated,
copied or serialised -- at gigabytes of memory and minutes of CPU.

So a document is first read as an *event stream* (the C parser: no objects are built), and
its **expanded** size is counted: a scalar or collection counts 1, an alias counts the whole
expanded size of the node it names. Bounding the number of aliases alone is not enough --
nine levels of seven aliases each are 63 aliases but 40 million nodes. Only a document within
every cap is then constructed with the safe loader.
"""

from __future__ import annotations

from typing import Any

import yaml

from learndock.config import ArchiveLimits
from learndock.errors import ManifestError

_BaseSafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # C speed, same safety

#: The one non-core tag accepted: ``!!python/tuple``, which PyYAML's default dumper writes for
#: every tuple (the reference engine's template puts ``input_shape: !!python/tuple [64]`` in
#: ``learnware.yaml``). A tuple is plain data; it is read as a list. Every other ``python/*``
#: tag (object, object/apply, object/new, name, module, ...) names code and stays refused.
PYTHON_TUPLE_TAG = "tag:yaml.org,2002:python/tuple"


class _SafeLoader(_BaseSafeLoader):  # type: ignore[misc,valid-type]
    """The safe loader plus one constructor: ``!!python/tuple`` -> list."""


def _construct_tuple_as_list(loader: yaml.SafeLoader, node: yaml.Node) -> list[Any]:
    if not isinstance(node, yaml.SequenceNode):
        raise yaml.constructor.ConstructorError(
            None, None, "!!python/tuple must tag a sequence", node.start_mark
        )
    return loader.construct_sequence(node, deep=True)


_SafeLoader.add_constructor(PYTHON_TUPLE_TAG, _construct_tuple_as_list)

#: Deepest nesting of collections accepted (libyaml itself stops at 1000; the pure-Python
#: parser and later recursive consumers -- validation, JSON -- have no such bound).
YAML_MAX_DEPTH = 64

#: What a hostile YAML text can make the parser or the safe constructor raise besides
#: ``yaml.YAMLError``: bad timestamps (``2020-13-45``), integers too long to convert,
#: unhashable keys in exotic tags, deep recursion in the pure-Python parser.
_CONSTRUCT_ERRORS = (ValueError, TypeError, OverflowError, RecursionError, AttributeError)


def _env(field: str) -> str:
    return f"LEARNDOCK_ZIP_{field.upper()}"


def count_yaml(data: str | bytes, limits: ArchiveLimits, what: str) -> int:
    """Count the expanded nodes of ``data`` from its event stream; raise past any cap.

    Returns the expanded node count. Raises :class:`ManifestError` naming the cap
    (``LEARNDOCK_ZIP_YAML_MAX_*``) that the document breaks, as soon as it breaks it.
    """
    anchors: dict[str, int] = {}
    # one frame per open collection: [expanded size so far, anchor or None]
    stack: list[list[Any]] = []
    total = 0
    aliases = 0

    def add(size: int) -> None:
        nonlocal total
        total += size
        if stack:
            stack[-1][0] += size
        if total > limits.yaml_max_nodes:
            raise ManifestError(
                f"{what} expands to more than {limits.yaml_max_nodes} YAML nodes "
                f"(anchors and aliases count once per use); the limit is "
                f"{limits.yaml_max_nodes} ({_env('yaml_max_nodes')}) -- alias bomb?"
            )

    try:
        for event in yaml.parse(data, Loader=_SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > limits.yaml_max_aliases:
                    raise ManifestError(
                        f"{what} uses more than {limits.yaml_max_aliases} YAML aliases (*name); "
                        f"the limit is {limits.yaml_max_aliases} ({_env('yaml_max_aliases')})"
                    )
                size = anchors.get(event.anchor)
                if size is None:
                    raise ManifestError(
                        f"{what} is not valid YAML: alias *{event.anchor} names no anchor completed before it"
                    )
                add(size)
            elif isinstance(event, yaml.ScalarEvent):
                add(1)
                if event.anchor is not None:
                    anchors[event.anchor] = 1
            elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                if len(stack) >= YAML_MAX_DEPTH:
                    raise ManifestError(
                        f"{what} nests collections more than {YAML_MAX_DEPTH} levels deep"
                    )
                add(1)
                stack.append([1, event.anchor])
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                size, anchor = stack.pop()
                if stack:
                    stack[-1][0] += size - 1  # the parent already counted our nodes as added
                if anchor is not None:
                    anchors[anchor] = size
            elif isinstance(event, yaml.DocumentStartEvent):
                anchors.clear()
    except ManifestError:
        raise
    except yaml.YAMLError as exc:
        raise ManifestError(f"{what} is not valid YAML: {exc}") from None
    except _CONSTRUCT_ERRORS as exc:
        raise ManifestError(f"{what} is not valid YAML: {type(exc).__name__}: {exc}") from None
    return total


def load_yaml(
    data: str | bytes, limits: ArchiveLimits | None = None, what: str = "YAML file"
) -> Any:
    """Parse one YAML document from an untrusted source, within ``limits``.

    Checks, in order and before building anything: the size in bytes
    (``yaml_max_bytes``), then -- on the event stream -- the alias count
    (``yaml_max_aliases``), the nesting depth and the expanded node count
    (``yaml_max_nodes``). Only then is the document built with the safe loader (plain data:
    no tags that run code; ``!!python/tuple`` is read as a list, any other ``!!python/...``
    tag is refused by name). Every failure is a :class:`ManifestError` that says which cap.
    """
    limits = limits or ArchiveLimits()
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > limits.yaml_max_bytes:
        raise ManifestError(
            f"{what} is {size} bytes; the limit is {limits.yaml_max_bytes} "
            f"({_env('yaml_max_bytes')})"
        )
    count_yaml(data, limits, what)
    try:
        return yaml.load(data, Loader=_SafeLoader)
    except yaml.constructor.ConstructorError as exc:
        tag = _unsafe_tag(exc)
        if tag is not None:
            raise ManifestError(
                f"{what} is not valid YAML here: it uses the YAML tag {tag!r}; "
                "Python-specific tags can name code and are "
                "refused; only plain data is accepted (standard tags, and !!python/tuple, read "
                "as a list)"
            ) from None
        raise ManifestError(f"{what} is not valid YAML: {exc}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{what} is not valid YAML: {exc}") from None
    except _CONSTRUCT_ERRORS as exc:
        raise ManifestError(f"{what} is not valid YAML: {type(exc).__name__}: {exc}") from None


def _unsafe_tag(exc: yaml.constructor.ConstructorError) -> str | None:
    """The ``python/...`` tag a constructor error is about, shortened for a message."""
    problem = str(exc.problem or "")
    marker = "tag:yaml.org,2002:"
    at = problem.find(marker)
    if at < 0:
        return None
    tag = problem[at:].split()[0].strip("'\"")
    if not tag.startswith(marker + "python/"):
        return None
    return "!!" + tag[len(marker):][:80]
