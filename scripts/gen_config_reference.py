"""Write docs/configuration-reference.md from the configuration schema.

Every key comes from the msgspec structs that decode the config (``edgeworker.config``: the
core tables, and each feature's keys and tables: ``confschema.Feature``), with its type and
default as the loader sees them. Its description is read from the ``Keys:`` table of the
docstring next to it: the struct's own (or its base's), or, for a key a feature adds, the
feature module's. A key without a description, a described key that does not exist, or a
nested table without a title here is an error: the page is complete or not written.

    .venv/bin/python scripts/gen_config_reference.py           # (re)write the page
    .venv/bin/python scripts/gen_config_reference.py --check   # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi

from edgeworker import config, confschema
from edgeworker.units import Rate

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "configuration-reference.md"

#: each table's heading, in the order of the page; a struct the walk finds that is not here
#: is an error (a new nested table needs its title)
TITLES: dict[str, str] = {
    "Config": "Top level",
    "Main": "`[main]`",
    "Http": "`[http]`",
    "Server": "`[[server]]`",
    "Location": "`[[server.location]]`",
    "Return": "`return = { … }` (a location key)",
    "Limit": "`limit = { … }` (a location key)",
    "Jwt": "`jwt = { … }` (a location key)",
    "Redis": "`[redis.NAME]`",
    "Upstream": "`[upstream.NAME]`",
    "UpstreamServer": "`servers = [{ … }]` (in `[upstream.NAME]`)",
}

#: fields the loader sets, not keys a config may hold
NOT_KEYS = {("Config", "file")}

#: what the loader does when a top-level table is absent
TOP_DEFAULTS = {"server": "at least one"}

#: types the struct spells more loosely than the loader reads them
TYPES = {("Config", "shared_dict"): "table of sizes"}

CUSTOM = {
    confschema.Size: "size",
    confschema.Duration: "duration",
    confschema.Workers: 'integer or `"auto"`',
    confschema.Handlers: "handler or list of handlers",
    confschema.PathStr: "path",
    confschema.StrList: "string or list of strings",
    Rate: "rate",
}


class SchemaError(Exception):
    """The schema and its descriptions do not make a complete page."""


# --- descriptions -------------------------------------------------------------------------


def key_table(doc: str | None) -> dict[str, str]:
    """The ``Keys:`` section of a docstring: ``name: text`` lines, continuation lines indented
    further, up to a blank line or a line indented no further than ``Keys:``."""
    out: dict[str, str] = {}
    if not doc:
        return out
    lines = doc.expandtabs().split("\n")
    start = next((n for n, line in enumerate(lines) if line.strip() == "Keys:"), None)
    if start is None:
        return out
    base = len(lines[start]) - len(lines[start].lstrip())
    entry_indent = None
    name = None
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        indent = len(line) - len(line.lstrip())
        if indent <= base:
            break
        if entry_indent is None:
            entry_indent = indent
        if indent == entry_indent:
            m = re.match(r"\s*([a-z_][a-z0-9_]*): (.+)$", line)
            if not m:
                raise SchemaError(f"malformed Keys: line {line.strip()!r}")
            name = m.group(1)
            out[name] = m.group(2).strip()
        elif name is not None:
            out[name] += " " + line.strip()
    return out


def _feature_docs() -> dict[str, tuple[str, str]]:
    """Key → (description, module) from the ``Keys:`` tables of the features' modules."""
    docs: dict[str, tuple[str, str]] = {}
    for feature in (*config.FEATURES, *config.SERVER_FEATURES):
        module = sys.modules[feature.check.__module__]
        for key, text in key_table(module.__doc__).items():
            docs[key] = (text, module.__name__)
    return docs


# --- the walk -----------------------------------------------------------------------------


def _structs() -> list[type]:
    """Every struct of the config, top level first, in the order the walk reaches them."""
    order: list[type] = []

    def walk(info: Any) -> None:
        if isinstance(info, mi.StructType):
            if info.cls in order:
                return
            order.append(info.cls)
            for f in info.fields:
                walk(f.type)
        elif isinstance(info, mi.Metadata):
            walk(info.type)
        elif isinstance(info, mi.UnionType):
            for t in info.types:
                walk(t)
        elif isinstance(info, mi.DictType):
            walk(info.value_type)
        elif isinstance(info, (mi.ListType, mi.VarTupleType)):
            walk(info.item_type)
        elif isinstance(info, mi.TupleType):
            for t in info.item_types:
                walk(t)

    walk(mi.type_info(config.Config))
    return order


def _type(info: Any) -> str:
    if isinstance(info, mi.Metadata):
        return _type(info.type)
    if isinstance(info, mi.IntType):
        return "integer" + (f" ≥ {info.ge}" if info.ge is not None else "")
    if isinstance(info, mi.StrType):
        return "string"
    if isinstance(info, mi.BoolType):
        return "boolean"
    if isinstance(info, mi.FloatType):
        return "number"
    if isinstance(info, mi.CustomType):
        if info.cls not in CUSTOM:
            raise SchemaError(f"no name for the value type {info.cls.__name__}")
        return CUSTOM[info.cls]
    if isinstance(info, mi.UnionType):
        parts = [_type(t) for t in info.types if not isinstance(t, mi.NoneType)]
        return " or ".join(dict.fromkeys(parts))
    if isinstance(info, mi.DictType):
        if isinstance(info.value_type, mi.StructType):
            return "tables by name"
        return f"table of {_plural(_type(info.value_type))}"
    if isinstance(info, (mi.ListType, mi.VarTupleType)):
        return f"list of {_plural(_type(info.item_type))}"
    if isinstance(info, mi.TupleType):
        return "pair of " + _plural(_type(info.item_types[0]))
    if isinstance(info, mi.StructType):
        return "table"
    raise SchemaError(f"no name for the type {info!r}")


def _plural(name: str) -> str:
    if " or " in name:
        return f"({name})"
    if name.startswith(("list", "pair")):
        return name
    return name + "s"


# --- defaults -----------------------------------------------------------------------------


def _toml(value: Any) -> str:
    """A default as it would be written in the config."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, confschema.Duration):
        return f'"{_duration(float(value))}"'
    if isinstance(value, confschema.Size):
        return f'"{_size(int(value))}"'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{ … }"
    raise SchemaError(f"no TOML form for the default {value!r}")


def _duration(s: float) -> str:
    if s and s < 1:
        return f"{round(s * 1000)}ms"
    # whole hours or days; minutes from 5 on (nginx's docs write 60s and 75s, and so do these)
    for unit, n in (("d", 86400), ("h", 3600)):
        if s and s % n == 0:
            return f"{int(s // n)}{unit}"
    if s >= 300 and s % 60 == 0:
        return f"{int(s // 60)}m"
    return f"{s:g}s"


def _size(n: int) -> str:
    for unit, k in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if n and n % k == 0:
            return f"{n // k}{unit}"
    return str(n)


def _defaults() -> dict[str, str]:
    """Defaults of the keys whose struct field is None because they are inherited."""
    out = {}
    for name, _typ, default in config.INHERITED:
        out[name] = _toml(default)
    return out


def _default(cls_name: str, field: msgspec.structs.FieldInfo, inherited: dict[str, str]) -> str:
    name = field.encode_name
    if cls_name == "Config":
        return TOP_DEFAULTS.get(name, "optional")
    if field.required:
        return "required"
    if field.default_factory is not msgspec.NODEFAULT:
        return f"`{_toml(field.default_factory())}`"
    value = field.default
    if value is not None:
        return f"`{_toml(value)}`"
    if name in inherited:
        if cls_name == "Http":
            return f"`{inherited[name]}`"
        outer = "the server's, else `[http]`'s" if cls_name == "Location" else "`[http]`'s"
        return f"{outer}, else `{inherited[name]}`"
    http_fields = {f.encode_name for f in msgspec.structs.fields(config.Http)}
    if cls_name in ("Server", "Location") and name in http_fields:
        return "`[http]`'s"
    return "not set"


# --- the page -----------------------------------------------------------------------------


def render() -> str:
    structs = _structs()
    unknown = [c.__name__ for c in structs if c.__name__ not in TITLES]
    if unknown:
        raise SchemaError(f"tables without a title in TITLES: {', '.join(unknown)}")
    structs.sort(key=lambda c: list(TITLES).index(c.__name__))
    feature_docs = _feature_docs()
    inherited = _defaults()
    problems: list[str] = []
    used_feature_keys: set[str] = set()
    sections: list[str] = []
    for cls in structs:
        cname = cls.__name__
        own: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            if klass.__module__.startswith("edgeworker"):
                own.update(key_table(klass.__doc__))
        fields = [
            f
            for f in msgspec.structs.fields(cls)
            if not f.encode_name.startswith("__") and (cname, f.encode_name) not in NOT_KEYS
        ]
        names = {f.encode_name for f in fields}
        for stale in sorted(set(own) - names):
            problems.append(f"{cname}: describes {stale!r}, which is not one of its keys")
        infos = {f.encode_name: f.type for f in mi.type_info(cls).fields}
        rows = []
        for f in fields:
            key = f.encode_name
            text = own.get(key)
            if text is None and key in feature_docs:
                text = feature_docs[key][0]
                used_feature_keys.add(key)
            if text is None:
                problems.append(f"{cname}.{key}: no description (a Keys: line next to it)")
                continue
            typ = TYPES.get((cname, key)) or _type(infos[key])
            rows.append(
                f"| `{key}` | {typ} | {_default(cname, f, inherited)} | {_markdown(text)} |"
            )
        sections.append(
            f"## {TITLES[cname]}\n\n| key | type | default | description |\n|---|---|---|---|\n"
            + "\n".join(rows)
            + "\n"
        )
    for stale in sorted(set(feature_docs) - used_feature_keys):
        problems.append(f"{feature_docs[stale][1]}: describes {stale!r}, which no table has")
    if problems:
        raise SchemaError("\n".join(problems))
    return HEADER + "\n".join(sections)


def _markdown(text: str) -> str:
    """Docstring markup (``code``) as Markdown (`code`), for a table cell."""
    if "|" in text:  # an escaped pipe inside code shows its backslash in MkDocs
        raise SchemaError(f"a description holds '|', which would split its table row: {text!r}")
    return text.replace("``", "`")


HEADER = """# Configuration reference

<!-- Generated by scripts/gen_config_reference.py from the configuration schema and the
     Keys: tables of its docstrings: edit those, then run the script. -->

Every key the configuration accepts, table by table, with its type and default as the loader
reads them. The rules they follow (units, relative paths, `${NAME}`, inheritance, error
messages) and the nginx equivalents are on the [configuration](configuration.md) page.

Types: a *size* is bytes, or `"512k"`, `"10m"`, `"1g"`; a *duration* is seconds, or
`"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"1d"` (combinable: `"1m30s"`); a *rate* is `"N r/s"`,
`"N r/m"` or `"N r/h"`; a *handler* is `"module:function"`; a *path* is relative to the
config file's folder.

"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = ap.parse_args(argv)
    try:
        text = render()
    except SchemaError as e:
        print(f"cannot write {OUTPUT.relative_to(ROOT)}:\n{e}", file=sys.stderr)
        return 1
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(
                f"{OUTPUT.relative_to(ROOT)} is stale: run scripts/gen_config_reference.py",
                file=sys.stderr,
            )
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
