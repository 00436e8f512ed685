"""The command line of every experiment: Hydra's own failures as one line, and whose folder.

Each entry point hands its Hydra app to `run_cli`; it imports nothing heavy itself, so a
Ctrl-C during the imports is reported like any other stop::

    def app() -> None:                      # the heavy imports happen in here
        import hydra
        ...
        hydra.main(...)(main)()

    if __name__ == "__main__":
        run_cli(app, CONFIG_DIR)

Before Hydra starts, `run_cli` reads the command line as Hydra will, composes the config and
checks the run folder, so that everything a user can type either runs or stops with one line
`error: <setting>=<value> ...` on stderr and exit status 1: unknown settings (`foo=1`), a
mapping or list where a single value belongs, a config name that does not exist, several
values without `-m`, run folders that cannot be written, are full, or hold someone else's
files, and a Ctrl-C before the run began. Anything escaping the app after that is reported the
same way (no traceback; `SGTHEORY_TRACEBACK=1` prints it).

A run folder is marked by a small JSON file `.sgtheory-run` when a run first takes it; a run
starts only in a folder that is absent, empty (Hydra's own `.hydra/` and log files aside), or
marked and holding nothing but a run's files. A folder with anything else in it (the current
directory, an experiment's source folder, a user's notes) is refused, never emptied.
"""

from __future__ import annotations

import copy
import difflib
import errno
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from sgruns.errors import RunFolderError, one_line
from sgtheory.errors import ConfigError

PROJECT = "surrogate-gradient-theory"
MARKER = ".sgtheory-run"
# what a run of this project writes into its folder (an experiment may add names)
RUN_FILES = (
    MARKER,
    ".hydra",
    ".lock",
    "results.json",
    "checkpoint.pt",
    "Plots",
    "wandb",
    "data",
    "job_status.json",
    "status.json",
)
# Hydra writes these into the run folder before any code of the run is called
HYDRA_FILES = (".hydra", "job_status.json")
# temporary files of an interrupted atomic write (`runs._write_temp`, the writability probe)
TEMP = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp|\.probe\.[a-z0-9_]{8}")
EXIT_ERROR = 1
# Hydra's options: name -> takes a value
OPTIONS = {
    "-m": False,
    "--multirun": False,
    "-cn": True,
    "--config-name": True,
    "-cp": True,
    "--config-path": True,
    "-cd": True,
    "--config-dir": True,
    "--resolve": False,
    "-r": False,
    "--run": False,
}
# options after which Hydra prints something instead of running: left to Hydra
INFO_OPTIONS = (
    "-h",
    "--help",
    "--hydra-help",
    "--version",
    "-c",
    "--cfg",
    "-i",
    "--info",
    "-p",
    "--package",
    "-sc",
    "--shell-completion",
    "--experimental-rerun",
)
# characters Hydra's grammar does not take in an unquoted value
PLAIN_VALUE = re.compile(r"[A-Za-z0-9_\-+./:\\%@?* ]*")
PATH_SETTINGS = ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir")


# ---------------------------------------------------------------------- run folders
def is_marked(path: str | Path) -> bool:
    """True if `path` holds this project's marker file, i.e. was made by one of its runs."""
    try:
        data = json.loads((Path(path) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("project") == PROJECT


def is_temp(name: str) -> bool:
    """True for a temporary file an interrupted write of a run leaves behind."""
    return TEMP.fullmatch(name) is not None


def foreign_entries(path: str | Path, run_files: Iterable[str] = ()) -> list[str]:
    """Names in folder `path` that are not a run's (sorted; [] for an absent folder).

    Hydra's own files (`.hydra/`, `*.log`, the sweep callback's `job_status.json`) belong to
    the job that is starting. A marked folder may also hold the files a run writes
    (`RUN_FILES` and `run_files`); an unmarked one nothing else: results.json without the
    marker is somebody's file, not this project's run.
    """
    path = Path(path)
    try:
        names = sorted(p.name for p in path.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []  # absent (or below a file: reported as not writable)
    own = set(RUN_FILES) | set(run_files) if is_marked(path) else set(HYDRA_FILES)
    return [n for n in names if n not in own and not n.endswith(".log") and not is_temp(n)]


def mark(path: str | Path, experiment: str) -> None:
    """Write the marker that makes `path` a run folder of this project (atomically)."""
    text = json.dumps(
        {"project": PROJECT, "experiment": experiment, "created": time.strftime("%FT%T%z")}
    )
    target = Path(path) / MARKER
    fd, tmp = tempfile.mkstemp(dir=path, prefix=f".{MARKER}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def shown(names: Sequence[str], limit: int = 4) -> str:
    """A few names for a message: 'a, b, c, d and 3 more'."""
    head = ", ".join(names[:limit])
    return head + (f" and {len(names) - limit} more" if len(names) > limit else "")


def refuse_foreign(path: Path, where: str, foreign: Sequence[str]) -> NoReturn:
    """RunFolderError: `where` (`<setting>=<value>`) holds files that are not a run's."""
    raise RunFolderError(
        f"{where} holds files that are not a run of this project ({shown(foreign)}); a run "
        "starts only in a new or empty folder or in a run folder of its own (marked by "
        f"{MARKER}), so nothing there is moved or overwritten: choose another folder"
    )


def check_run_dir(path: str | Path, where: str, run_files: Iterable[str] = ()) -> None:
    """RunFolderError unless a run may start in `path`: absent (creatable) or empty or a run
    folder of this project, on a disk with room for a run's first files.

    `where` names the setting (`hydra.run.dir=...`) in the message.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{where} is a file, not a folder; choose a folder")
    foreign = foreign_entries(path, run_files)
    if foreign:
        refuse_foreign(path, where, foreign)
    probe_writable(path, where)


def probe_writable(path: Path, where: str) -> None:
    """RunFolderError if the nearest existing folder of `path` cannot take a small file
    (no permission, read-only, disk full): what Hydra would hit first, with a traceback."""
    ancestor = next(p for p in (path, *path.parents) if p.exists())
    if not ancestor.is_dir():
        raise RunFolderError(f"{where} is not writable ({ancestor} is a file); choose a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".probe.", suffix="")
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        why = err.strerror or str(err)
        if err.errno == errno.ENOSPC:
            raise RunFolderError(
                f"{where} cannot be written: the disk holding {ancestor} is full ({why}); free "
                "some space or choose a folder on another disk"
            ) from None
        raise RunFolderError(
            f"{where} is not writable ({ancestor}: {why}); choose a folder you can write to"
        ) from None


def remove_temp_files(path: Path) -> list[Path]:
    """Delete the temporary files interrupted writes left in run folder `path` and in its
    subfolders (not `wandb/`, which is wandb's); return what was removed."""
    removed = []
    folders = [path, *(p for p in path.iterdir() if p.is_dir() and p.name != "wandb")]
    for folder in folders:
        for entry in folder.iterdir():
            if entry.is_file() and is_temp(entry.name):
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


# ---------------------------------------------------------------------- the command line
def _split(args: Sequence[str]) -> tuple[list[str], list[str], dict[str, str]]:
    """(options as given, overrides, option values) of a Hydra command line."""
    options, overrides, values = [], [], {}
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if arg.startswith("-") and name in OPTIONS:
            if OPTIONS[name] and not eq:
                if i + 1 >= len(args):
                    raise ConfigError(f"{name} is given without a value; e.g. {name}=config")
                value = args[i + 1]
                options += [arg, value]
                i += 2
            else:
                options.append(arg)
                i += 1
            values[name] = value
            continue
        if arg.startswith("-") and not arg.startswith("~"):
            known = ", ".join(o for o in OPTIONS if o.startswith("--"))
            raise ConfigError(
                f"{arg} is not an option of this command; settings are given as "
                f"<setting>=<value>, options are -m, {known}"
            )
        overrides.append(arg)
        i += 1
    return options, overrides, values


def _is_path_setting(key: str) -> bool:
    """Run folders, and settings named like paths (`dataset.datadir`, `dataset.data_path`)."""
    key = key.lstrip("+")
    last = key.rsplit(".", 1)[-1]
    return key in PATH_SETTINGS or last.endswith(("dir", "path"))


def _escape_quoted(value: str) -> str:
    """`value` for Hydra's single-quoted strings: backslashes before a quote or the end
    doubled, quotes escaped (elsewhere a backslash stands for itself)."""
    value = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)
    return value.replace("'", "\\'")


def quote_paths(overrides: Sequence[str]) -> list[str]:
    """Values Hydra's grammar does not take unquoted, given quoted so that they mean what
    was typed: paths (`_is_path_setting`) with letters outside ASCII, commas, quotes or
    brackets, and any other value whose only such characters are letters outside ASCII."""
    out = []
    for arg in overrides:
        key, eq, value = arg.partition("=")
        plain = PLAIN_VALUE.fullmatch(value) is not None
        quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""
        ascii_rest = PLAIN_VALUE.fullmatch("".join(c for c in value if c.isascii()))
        text = _is_path_setting(key) or (not value.isascii() and ascii_rest is not None)
        if eq and text and not plain and not quoted and "${" not in value:
            arg = f"{key}='{_escape_quoted(value)}'"
        out.append(arg)
    return out


def _parse(overrides: Sequence[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = []
    for arg in overrides:
        if "=" not in arg and not arg.startswith("~"):
            raise ConfigError(
                f"{arg} is not a setting; give settings as <setting>=<value> (e.g. seed=2)"
            )
        try:
            parsed.append(parser.parse_override(arg))
        except HydraException as err:  # OverrideParseException and the grammar's own
            lines = [line for line in str(err).splitlines() if line.strip()]
            why = lines[0] if lines else "cannot be read"
            raise ConfigError(
                f"{arg} cannot be read as a setting ({why}); quote a value with special "
                f"characters: {arg.partition('=')[0]}='...'"
            ) from None
    return parsed


def _first_values(parsed: Sequence[Any]) -> list[str]:
    """The overrides with each sweep replaced by its first value (to compose one job)."""
    prefix = {"ADD": "+", "FORCE_ADD": "++", "DEL": "~", "CHANGE": ""}
    out = []
    for o in parsed:
        if o.is_sweep_override():
            try:
                first = next(iter(o.sweep_string_iterator()))
            except Exception:  # noqa: BLE001 - a sweep without values (intervals): skip it
                continue
            out.append(f"{prefix[o.type.name]}{o.get_key_element()}={first}")
        else:
            out.append(o.input_line)
    return out


def _config_names(config_dir: Path) -> list[str]:
    return sorted(p.stem for p in config_dir.glob("*.yaml"))


def _compose(config_dir: Path, name: str, overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=True)


def _leaf_keys(tree: Any, prefix: str = "") -> list[str]:
    if isinstance(tree, dict):
        return [k for key, v in tree.items() for k in _leaf_keys(v, f"{prefix}{key}.")]
    return [prefix[:-1]]


def _composition_error(
    err: Exception,
    parsed: Sequence[Any],
    config_dir: Path,
    base: Any,
    typed: dict[str, str] | None = None,
) -> ConfigError:
    """A ConfigError naming the override Hydra could not apply.

    `base`: the config composed with the group choices only (it gives the settings' names and,
    with a structured config, their types); `typed`: each override's value as the user typed it.
    """
    text = str(err)
    by_key = {o.key_or_group: o for o in parsed}
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        choices = sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
        return ConfigError(f"{group}={option} is not valid; choose one of: {', '.join(choices)}")
    refused = schema_error(err, parsed, base, typed) or _unknown_in_file(err, config_dir, base)
    if refused is not None:
        return refused
    over = re.search(
        r"Could not (?:override|append to config|delete from config)[^']*'([^']+)'", text
    )
    if over and over.group(1) in by_key:
        key = over.group(1)
        arg = by_key[key].input_line.lstrip("+~")
        keys = _setting_names(base)
        if key in keys and by_key[key].input_line.startswith("~"):
            return ConfigError(
                f"{by_key[key].input_line} is not valid: it removes a setting the experiment "
                f"needs; set it instead ({key}=<value>)"
            )
        inner = getattr(err.__cause__, "full_key", None) or key
        if inner != key and inner.startswith(f"{key}."):  # a mapping with an unknown member
            given = arg.partition("=")[2]
            return ConfigError(
                f"{key}={given} is not valid: {inner} is not a setting of this experiment; the "
                f"settings and their defaults are in {config_dir}"
            )
        return _not_a_setting(arg, key, keys, config_dir)
    cause = f" ({one_line(err.__cause__)})" if err.__cause__ is not None else ""
    return ConfigError(f"{one_line(err)}{cause}")


def _unknown_in_file(err: BaseException, config_dir: Path, base: Any) -> ConfigError | None:
    """A ConfigError for a key a YAML file sets and its structured config lacks, or None."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError

    cause = err.__cause__ or err.__context__
    in_file = re.match(r"In '([^']+)'", str(err))
    if not isinstance(cause, ConfigKeyError) or not in_file or not cause.full_key:
        return None
    name, key = in_file.group(1), str(cause.full_key)
    group = name.rpartition("/")[0].replace("/", ".")
    within = key[len(group) + 1 :] if group and key.startswith(f"{group}.") else key
    try:
        value = _shown(OmegaConf.select(OmegaConf.load(config_dir / f"{name}.yaml"), within))
    except Exception:  # noqa: BLE001 - the file is Hydra's to read: name the key alone
        value = "..."
    return _not_a_setting(f"{key}={value} (in {name}.yaml)", key, _setting_names(base), config_dir)


def _setting_names(cfg: Any) -> list[str]:
    """The dotted names of the settings of `cfg` (Hydra's own left out)."""
    if cfg is None:
        return []
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(cfg, resolve=False)
    return [k for k in _leaf_keys(tree) if not k.startswith("hydra.")]


def _not_a_setting(arg: str, key: str, keys: Sequence[str], config_dir: Path) -> ConfigError:
    close = difflib.get_close_matches(key, keys, n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return ConfigError(
        f"{arg} is not a setting of this experiment; {hint}the settings and their "
        f"defaults are in {config_dir}"
    )


# ---------------------------------------------------------------------- structured configs
TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
PLURALS = {int: "integers", float: "numbers", bool: "true/false values", str: "strings"}


def _kind(hint: Any, plural: bool = False) -> str:
    """What a type hint of a structured config allows, in words ("an integer", ...)."""
    import types
    import typing

    words = PLURALS if plural else TYPE_WORDS
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if set(args) <= {int, float}:
            return words[float]
        return " or ".join(_kind(a, plural) for a in args)
    if origin in (list, tuple):
        inner = f" of {_kind(args[0], plural=True)}" if args and args[0] is not typing.Any else ""
        return f"lists{inner}" if plural else f"a list{inner}"
    if origin is dict or hint is dict:
        return "groups of settings" if plural else "a group of settings"
    if hint in words:
        return words[hint]
    name = getattr(hint, "__name__", str(hint))
    return f"values of type {name}" if plural else f"a value of type {name}"


def allowed(cfg: Any, key: str) -> str | None:
    """What setting `key` of structured config `cfg` allows ("an integer or null"), or None
    where `cfg` does not type it."""
    return _node_allows(_node(cfg, key))


def _node_allows(node: Any) -> str | None:
    if node is None or not hasattr(node, "_metadata") or node._metadata.ref_type is Any:
        return None
    what = _kind(node._metadata.ref_type)
    return f"{what} or null" if node._metadata.optional else what


def schema_error(
    err: BaseException,
    parsed: Sequence[Any] = (),
    base: Any = None,
    typed: dict[str, str] | None = None,
) -> ConfigError | None:
    """The one-line ConfigError for a value the structured config refused (wrong type), or
    None for any other failure. Names the setting and the value as typed (from `parsed` and
    `typed`), and what the setting allows (from `base`'s types)."""
    from omegaconf.errors import ValidationError

    cause = err if isinstance(err, ValidationError) else (err.__cause__ or err.__context__)
    if not isinstance(cause, ValidationError):
        return None
    in_file = re.match(r"In '([^']+)'", str(err))  # a value of a YAML file, not of an override
    where = f" (in {in_file.group(1)}.yaml)" if in_file else ""
    typed = typed or {}
    merging = re.search(r"Error merging override (.+)", str(err).splitlines()[0])
    line = merging.group(1).strip() if merging else None
    found = [o for o in parsed if o.input_line == line] if line else []
    if found:
        key = found[0].key_or_group.lstrip("+")
        value = typed.get(key, found[0].input_line.partition("=")[2])
    elif line is not None:
        key, _, value = line.lstrip("+").partition("=")
    else:
        key = str(cause.full_key or cause.key)
        value = _shown(cause.value)
    what = allowed(base, key) if base is not None else _node_allows(cause.child_node)
    if what is None:
        first = (str(cause).splitlines() or [type(cause).__name__])[0]
        return ConfigError(f"{key}={value}{where} is not valid ({first})")
    return ConfigError(f"{key}={value}{where} is not valid; it must be {what}")


def _shown(value: Any) -> str:
    """A value as a user would type it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    return str(value)


def unknown_settings(cfg: Any) -> list[str]:
    """Dotted names in `cfg` that its structured config does not have (settings added with
    `+`/`++`, which Hydra lets into a typed config); [] where nothing is typed."""
    import dataclasses

    from omegaconf import DictConfig, OmegaConf

    def walk(node: Any, prefix: str) -> list[str]:
        kind = OmegaConf.get_type(node)
        fields = (
            {f.name for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else None
        )
        out = []
        for key in node.keys():
            name = f"{prefix}{key}"
            if name == "hydra":
                continue
            if fields is not None and key not in fields:
                out.append(name)
                continue
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
                out += walk(child, f"{name}.")
        return out

    return walk(cfg, "")


def _node(cfg: Any, key: str) -> Any:
    """The node of setting `key` in `cfg` (its type and flags), or None if it has none."""
    from omegaconf import DictConfig, OmegaConf

    parent_key, _, last = key.rpartition(".")
    try:
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        return parent._get_node(last) if isinstance(parent, DictConfig) else None
    except Exception:  # noqa: BLE001 - not a setting of `cfg`
        return None


def _check_types(
    parsed: Sequence[Any], cfg: Any, base: Any, typed: dict[str, str], config_dir: Path
) -> None:
    """ConfigError for a setting the structured config lacks (added with `+`/`++`), for a
    sweep's value of the wrong type (the first value of each sweep was composed already),
    and for a value OmegaConf would convert where a typed config asks for true/false or a
    string (`sigm=1`, `device=3`: refused as typed, not read as true or as "3")."""
    from omegaconf import BooleanNode, OmegaConf, StringNode
    from omegaconf.errors import OmegaConfBaseException, ValidationError

    unknown = unknown_settings(cfg)
    if unknown:
        name = unknown[0]
        value = typed.get(name)
        if value is None:
            value = _shown(OmegaConf.select(cfg, name, throw_on_missing=False))
        raise _not_a_setting(f"{name}={value}", name, _setting_names(base), config_dir)
    trial = None
    for o in parsed:
        key = o.key_or_group.lstrip("+")
        if o.type.name == "DEL" or key.startswith("hydra") or (config_dir / key).is_dir():
            continue
        node = _node(base, key)
        if o.is_sweep_override():
            try:
                pairs = list(zip(o.sweep_iterator(), o.sweep_string_iterator()))
            except Exception:  # noqa: BLE001 - a sweep without values (intervals): Hydra's
                continue
        else:
            pairs = [(o.value(), typed.get(o.key_or_group, o.input_line.partition("=")[2]))]
        for value, text in pairs:
            wrong = (isinstance(node, BooleanNode) and not isinstance(value, bool)) or (
                isinstance(node, StringNode) and not isinstance(value, str)
            )
            if wrong and not (value is None and node._metadata.optional):
                raise ConfigError(f"{key}={text} is not valid; it must be {allowed(base, key)}")
            if not o.is_sweep_override():
                continue
            if trial is None:
                trial = copy.deepcopy(cfg)
            try:
                OmegaConf.update(trial, key, value, merge=True)
            except ValidationError:
                what = allowed(base, key)
                raise ConfigError(
                    f"{key}={text} is not valid (a value of the sweep {o.input_line}); it must "
                    f"be {what}"
                    if what
                    else f"{key}={text} is not valid (a value of the sweep {o.input_line})"
                ) from None
            except OmegaConfBaseException:
                continue  # a key Hydra adds (`+`): refused above if the config is typed


def _check_shapes(parsed: Sequence[Any], base: Any, config_dir: Path) -> None:
    """ConfigError for a mapping or list given where the config holds a single value, for a
    single value given where it holds a group of settings, and for a deleted setting."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    for o in parsed:
        if o.type.name == "DEL" and not o.key_or_group.startswith("hydra"):
            raise ConfigError(
                f"{o.input_line} is not valid: it removes a setting the experiment needs; "
                f"set it instead ({o.key_or_group}=<value>)"
            )
        skip = o.is_sweep_override() or o.type.name == "DEL"
        if skip or o.key_or_group.startswith("hydra.") or (config_dir / o.key_or_group).is_dir():
            continue  # a sweep, a deletion, Hydra's own or a group's option (checked before)
        value = o.value()
        node = OmegaConf.select(base, o.key_or_group, default=None, throw_on_missing=False)
        if node is None:
            continue
        given = o.input_line.partition("=")[2]
        if not isinstance(node, (DictConfig, ListConfig)) and isinstance(value, (dict, list)):
            kind = "a mapping" if isinstance(value, dict) else "a list"
            raise ConfigError(
                f"{o.key_or_group}={given} is not valid; it takes a single value (default "
                f"{node!r}), not {kind}"
            )
        if isinstance(node, DictConfig) and not isinstance(value, dict):
            first = next(iter(node.keys()), "x")
            raise ConfigError(
                f"{o.key_or_group}={given} is not valid; it is a group of settings: set its "
                f"members, e.g. {o.key_or_group}.{first}=..."
            )


def _group_overrides(parsed: Sequence[Any], config_dir: Path) -> list[str]:
    """The overrides that choose a config group's option, each checked to name one."""
    chosen = []
    for o in parsed:
        folder = config_dir / o.key_or_group
        if not folder.is_dir() or o.type.name == "DEL" or o.key_or_group.startswith("hydra"):
            continue  # Hydra's own groups (launchers, sweepers) also come from its plugins
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        for value in values:
            if not isinstance(value, str) or value not in options:
                given = o.input_line.partition("=")[2]
                raise ConfigError(
                    f"{o.key_or_group}={given} is not valid; choose one of: {', '.join(options)}"
                )
        if not o.is_sweep_override():
            chosen.append(o.input_line)
    return chosen


def _folder_setting(cfg: Any, key: str, typed: dict[str, str]) -> tuple[Path, str] | None:
    from omegaconf import OmegaConf

    try:
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except Exception:  # noqa: BLE001 - resolved by Hydra at run time only: checked then
        return None
    if value is None:
        return None
    value = str(value)
    shown_as = typed.get(key, value)
    if not value.strip():
        raise ConfigError(f"{key}={shown_as} is not valid; give a folder for the run")
    if value.startswith("~"):
        raise ConfigError(
            f"{key}={shown_as} is not valid: Hydra takes it as a folder named '~' here, not "
            f"your home folder; give the full path ({Path(value).expanduser()})"
        )
    path = Path(value)
    where = f"{key}={shown_as}"
    if str(path.absolute()) != shown_as:
        where += f" ({path.absolute()})"
    return path, where


def _refuse_sweeps(parsed: Sequence[Any]) -> None:
    """ConfigError for the first override giving several values (a run without -m)."""
    for o in parsed:
        if o.is_sweep_override():
            key = o.get_key_element()
            given = list(o.sweep_string_iterator())
            raise ConfigError(
                f"{o.input_line} gives several values; add -m to run one job per value, or "
                f"write {key}=[{','.join(given)}] for a list, or "
                f"{key}='{o.input_line.partition('=')[2]}' for one string"
            )


def prepare(
    args: Sequence[str], config_dir: str | Path, run_files: Iterable[str] = ()
) -> list[str]:
    """Check a command line as Hydra will read it; return it (paths quoted) or raise.

    ConfigError names the override; RunFolderError the run folder (see `check_run_dir`;
    in a sweep the sweep folder may also hold the job folders of earlier sweeps).
    """
    config_dir = Path(config_dir)
    if any(a.partition("=")[0] in INFO_OPTIONS for a in args):
        return list(args)
    options, overrides, values = _split(args)
    as_typed = {a.partition("=")[0].lstrip("+"): a.partition("=")[2] for a in overrides}
    overrides = quote_paths(overrides)
    parsed = _parse(overrides)
    multirun = "-m" in values or "--multirun" in values
    groups = _group_overrides(parsed, config_dir)  # a group's options named first
    if not multirun:
        _refuse_sweeps(parsed)
    name = values.get("--config-name", values.get("-cn", None)) or "config"
    for option in ("--config-dir", "-cd"):
        if option in values and not Path(values[option]).is_dir():
            raise ConfigError(f"{option}={values[option]} is not valid: no such folder")
    if {"--config-path", "-cp", "--config-dir", "-cd"} & set(values):
        return [*options, *overrides]  # another config folder: Hydra reports on its own
    if name not in _config_names(config_dir):
        raise ConfigError(
            f"--config-name={name} is not valid; choose one of: "
            f"{', '.join(_config_names(config_dir))}"
        )
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    first = _first_values(parsed)
    typed = {
        o.key_or_group: as_typed.get(o.key_or_group, o.input_line.partition("=")[2])
        for o in parsed
        if not o.is_sweep_override()
    }
    try:
        base = _compose(config_dir, name, groups)
    except (HydraException, OmegaConfBaseException) as err:
        raise _composition_error(err, parsed, config_dir, None, typed) from None
    _check_shapes(parsed, base, config_dir)
    try:
        cfg = _compose(config_dir, name, first)
    except (HydraException, OmegaConfBaseException) as err:
        raise _composition_error(err, parsed, config_dir, base, typed) from None
    _check_types(parsed, cfg, base, typed, config_dir)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    found = _folder_setting(cfg, key, typed)
    if found is not None:
        path, where = found
        if multirun:
            check_sweep_dir(path, where)
        else:
            check_run_dir(path, where, run_files)
    return [*options, *overrides]


def check_sweep_dir(path: Path, where: str) -> None:
    """A sweep folder holds Hydra's multirun.yaml, logs and job folders (checked each when
    its job starts); any file besides is someone else's: refused."""
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{where} is a file, not a folder; choose a folder")
    if path.is_dir() and not is_marked(path):
        foreign = sorted(
            p.name
            for p in path.iterdir()
            if not p.is_dir() and p.name != "multirun.yaml" and not p.name.endswith(".log")
        )
        if foreign:
            refuse_foreign(path, where, foreign)
    probe_writable(path, where)


def describe(err: BaseException) -> str:
    """One line for an error that escaped an entry point's own handling."""
    if isinstance(err, KeyboardInterrupt):
        return "stopped by Ctrl-C before the run started; nothing was recorded"
    if isinstance(err, (ConfigError, RunFolderError)):
        return one_line(err)
    name = type(err).__name__
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        if err.errno == errno.ENOSPC:
            return f"{where}the disk is full ({err.strerror}); free some space and rerun"
        return f"{where}{err.strerror or one_line(err)} ({name})"
    if isinstance(err, MemoryError):
        return "out of memory (MemoryError); use smaller sizes"
    refused = schema_error(err)
    if refused is not None:
        return one_line(refused)
    if name in ("ConfigCompositionException", "MissingConfigException", "OverrideParseException"):
        cause = f" ({one_line(err.__cause__)})" if err.__cause__ is not None else ""
        return f"{one_line(err)}{cause}"
    return f"{name}: {one_line(err)} (unexpected; SGTHEORY_TRACEBACK=1 shows where it happened)"


def report(err: BaseException) -> NoReturn:
    """Print `error: ...` (one line) on stderr unless already printed; exit with status 1."""
    if os.environ.get("SGTHEORY_TRACEBACK") == "1":
        import traceback

        traceback.print_exception(err)
    if not getattr(err, "reported", False):
        print(f"error: {describe(err)}", file=sys.stderr, flush=True)
    sys.exit(EXIT_ERROR)


def run_cli(
    app: Callable[[], Any],
    config_dir: str | Path,
    run_files: Iterable[str] = (),
    argv: Sequence[str] | None = None,
    register: Callable[[], None] | None = None,
) -> None:
    """Run Hydra `app` for the command line `argv` (default: sys.argv[1:]), every failure
    before, inside or after it one line `error: ...` and exit status 1.

    `config_dir`: the app's config folder; `run_files`: names the experiment writes into a
    run folder besides `RUN_FILES`; `register`: stores the experiment's structured config
    (its schema) in Hydra's ConfigStore, before the command line is composed. Hydra's own
    exceptions reach here (HYDRA_FULL_ERROR=1) instead of being printed by Hydra over several
    lines.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        os.environ["HYDRA_FULL_ERROR"] = "1"
        if register is not None:
            register()
        sys.argv[1:] = prepare(args, config_dir, run_files)
        app()
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001 - the point: no traceback for any input
        report(err)


def record_failure(run_dir: Path, cfg: Any, err: BaseException, experiment: str) -> None:
    """A sweep's job that stopped before it wrote results.json gets one saying why (in its
    own, new folder), so that the sweep's collection lists it. Run-folder refusals and
    folders that already hold results or other files are left as they are."""
    from omegaconf import OmegaConf

    from sgruns.errors import RunFolderError, one_line
    from sgtheory.files import write_json_atomic

    if isinstance(err, RunFolderError) or (run_dir / "results.json").exists():
        return
    if foreign_entries(run_dir):
        return
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation that cannot resolve: keep it as typed
        config = OmegaConf.to_container(cfg, resolve=False)
    failed = {"status": "failed", "error": one_line(err), "config": config}
    try:
        if not (run_dir / MARKER).exists():
            mark(run_dir, experiment)
        write_json_atomic(run_dir / "results.json", failed)
    except OSError:
        pass  # the error itself is reported
