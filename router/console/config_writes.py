"""How the console's config writes are made (config_api's handlers call them): which files
a client may write, the check of candidates in a temporary copy of the config dir,
atomic replacement of a file, and the edit of one instance of providers.yaml with its
comments and key order kept (ruamel.yaml round-trip)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from router.compiler import compile_config
from router.compiler.layout import PIPELINES_DIR, PROVIDERS_FILE, ROUTES_FILE
from router.config.yamlsource import _pairs
from router.console.secrets import MASK, literal_secrets, restore_secrets, splice

TESTS_FILE = "routes.test.yaml"
_PIPELINE_NAME = re.compile(r"pipelines/[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*\.yaml")

DataPath = tuple[str | int, ...]


def config_files(config_dir: str | Path) -> list[str]:
    """The config files of `config_dir` that exist, relative to it."""
    root = Path(config_dir)
    names = [n for n in (PROVIDERS_FILE, ROUTES_FILE, TESTS_FILE) if (root / n).is_file()]
    pipelines = root / PIPELINES_DIR
    if pipelines.is_dir():
        names += [f"{PIPELINES_DIR}/{p.name}" for p in sorted(pipelines.glob("*.yaml"))]
    return names


def read(config_dir: str, name: str) -> str | None:
    try:
        return (Path(config_dir) / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def allowed(config_dir: str, name: Any) -> bool:
    """One of the config files, by a name that stays inside the config dir."""
    if not isinstance(name, str) or ".." in name or "\\" in name:
        return False
    if name not in (PROVIDERS_FILE, ROUTES_FILE, TESTS_FILE) and not _PIPELINE_NAME.fullmatch(name):
        return False
    root = os.path.realpath(config_dir)
    target = os.path.realpath(os.path.join(root, name))
    return os.path.commonpath([root, target]) == root


def check_candidates(config_dir: str, files: dict[str, str]) -> list[str]:
    """Compile the config dir with `files` in place of its own (in a temporary copy):
    the errors as `file:line:col: message`, none when it compiles. A secret the files on
    disk write literally is `***` in them."""
    with tempfile.TemporaryDirectory(prefix="router-config-check-") as scratch:
        for name in config_files(config_dir):
            target = Path(scratch) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(config_dir) / name, target)
        for name, text in files.items():
            target = Path(scratch) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        _plan, diagnostics = compile_config(scratch)
        errors = [d for d in diagnostics if d.severity == "error"]
        if TESTS_FILE in files:
            from router.compiler.routetest import load_tests

            tests = load_tests(Path(scratch) / TESTS_FILE, TESTS_FILE)
            errors += [d for d in tests.diagnostics if d.severity == "error"]
    secrets = {
        value
        for name in config_files(config_dir)
        for value in literal_secrets(name, read(config_dir, name) or "")
        if len(value) >= 4
    }
    messages = []
    for d in errors:
        message = f"{d.file}:{d.line}:{d.col}: {d.message}"
        for secret in sorted(secrets, key=len, reverse=True):
            message = message.replace(secret, MASK)
        messages.append(message)
    return messages


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`: a temporary file in the same folder, then os.replace
    (readers and the watcher see the old file or the new one, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


# --- providers.yaml, edited with comments and order kept --------------------------------


def edit_instance(text: str, pool: str, instance_id: str, fields: dict[str, Any]) -> str:
    """providers.yaml `text` with instance `instance_id` of `pool` given `fields` (null
    removes a key; a masked value where the file has a literal secret keeps it, as
    restore_secrets puts it back). LookupError for an unknown pool or instance,
    secrets.MaskedValueError for a masked value that stands for no secret."""
    from ruamel.yaml import YAML
    from ruamel.yaml.util import load_yaml_guess_indent

    editor = YAML(typ="rt")
    editor.preserve_quotes = True
    editor.width = 4096
    _, sequence, offset = load_yaml_guess_indent(text)
    if sequence and offset is not None and sequence > offset:  # keep the file's indentation
        editor.indent(mapping=sequence - offset, sequence=sequence, offset=offset)
    data = editor.load(text)
    providers = data.get("providers") if hasattr(data, "get") else None
    spec = providers.get(pool) if hasattr(providers, "get") else None
    if not hasattr(spec, "get"):
        raise LookupError(f"no provider pool named {pool!r} in {PROVIDERS_FILE}")
    instances = spec.get("instances") or []
    index = next(
        (
            i
            for i, item in enumerate(instances)
            if hasattr(item, "get") and item.get("id") == instance_id
        ),
        None,
    )
    if index is None:
        raise LookupError(f"no instance {instance_id!r} in pool {pool!r}")
    instance = instances[index]
    for key, value in fields.items():
        if value is None:
            instance.pop(key, None)
        else:
            instance[key] = value
    out = io.StringIO()
    editor.dump(data, out)
    edited = _only_instance(text, out.getvalue(), ("providers", pool, "instances", index))
    return restore_secrets(PROVIDERS_FILE, text, edited)


def _only_instance(original: str, edited: str, path: DataPath) -> str:
    """`original` with just the instance at `path` taken from `edited` (ruamel rewrites
    the spacing of flow collections and the wrapping of long lines everywhere): the rest
    of the file stays byte for byte. `edited` itself when that cannot be done safely."""
    try:
        old = _node_at(yaml.compose(original, Loader=yaml.SafeLoader), path)
        new = _node_at(yaml.compose(edited, Loader=yaml.SafeLoader), path)
    except yaml.YAMLError:
        return edited
    if old is None or new is None or old.start_mark.column != new.start_mark.column:
        return edited
    instance = _unchanged_values_as_written(original, old, edited, new)
    spliced = original[: old.start_mark.index] + instance + original[old.end_mark.index :]
    try:
        same = yaml.safe_load(spliced) == yaml.safe_load(edited)
    except yaml.YAMLError:
        same = False
    return spliced if same else edited


def _unchanged_values_as_written(original: str, old: Node, edited: str, new: Node) -> str:
    """The text of instance `new` in `edited`, each one-line value the edit left alone
    written as `original` had it (`{ a: b }` stays so, not ruamel's `{a: b}`)."""
    start, end = new.start_mark.index, new.end_mark.index
    if not isinstance(old, MappingNode) or not isinstance(new, MappingNode):
        return edited[start:end]
    before = {k.value: v for k, v in old.value if isinstance(k, ScalarNode)}
    edits: dict[int, tuple[int, str]] = {}
    for key, value in new.value:
        was = before.get(key.value) if isinstance(key, ScalarNode) else None
        if was is None or was.start_mark.line != was.end_mark.line:
            continue
        try:
            same = _construct(was) == _construct(value)
        except yaml.YAMLError:
            same = False
        if same and value.start_mark.line == value.end_mark.line:
            text = original[was.start_mark.index : was.end_mark.index]
            edits[value.start_mark.index - start] = (value.end_mark.index - start, text)
    return splice(edited[start:end], edits)


def _construct(node: Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _node_at(node: Node | None, path: DataPath) -> Node | None:
    for part in path:
        if isinstance(node, MappingNode):
            node = next((v for k, v in _pairs(node) if k.value == part), None)
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return None
    return node
