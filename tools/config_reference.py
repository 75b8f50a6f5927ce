"""Generate ``docs/configuration.md``, the configuration reference, from ``node/config.py``.

    python tools/config_reference.py           write docs/configuration.md
    python tools/config_reference.py --check   exit 1 if docs/configuration.md is stale

Nothing is written down twice: the tool reads the source with :mod:`ast` (it never imports the node)
and follows ``parse_config`` the way the interpreter would, a small abstract interpretation of the
reading code. Every ``TABLE.get(KEY, KIND, DEFAULT)`` gives a key, its type and default (or makes it
required); every ``TABLE.check(KEY, OK, EXPECTED, VALUE)`` and
``ConfigError(TABLE.field_path(KEY), ...)`` gives a check; ``TABLE.table(KEY)`` and
``_Table(ENTRY, PATH)`` open a table or an array of tables. Helper functions are followed with their
arguments bound, so ``_cluster(parent_table)`` lists ``bootstrap`` under ``[parent]``. Descriptions
are the attribute docstrings of the dataclasses a table is read into (``FlowConfig`` for ``[flow]``,
found through ``NodeConfig``'s field annotations and the reading functions' return annotations).

What it must not do: describe a key by hand. A key the reading code does not reach with a literal
name (``[clearance.child]`` keys are region codes) is listed under the name of the variable that
holds it, upper-cased.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import operator
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG_MODULE = "node.config"
OUTPUT = ROOT / "docs" / "configuration.md"
ENTRY = "parse_config"
TOP_CLASS = "NodeConfig"
MAX_DEPTH = 12  # helper calls followed; the reading code nests three deep

_KINDS = {
    "str": "string",
    "int": "integer",
    "float": "number (integer or float)",
    "bool": "boolean",
    "list": "array",
    "dict": "table",
}


class Unknown:
    """A value the reading code computes at run time; rendered as its source text."""

    def __init__(self, text: str) -> None:
        self.text = text


@dataclass(frozen=True)
class Partial:
    """A string whose first part is known (``f"children[{index}]"`` is ``children[`` then more)."""

    known: str
    rest: str


@dataclass(frozen=True)
class ClassRef:
    """A dataclass named in the source: its module and name."""

    module: str
    name: str


@dataclass(frozen=True)
class Instance:
    """A call of a dataclass (``default = FlowConfig()``): its attributes are the field defaults."""

    cls: ClassRef


@dataclass(frozen=True)
class KeyValue:
    """The value read from one key; shown as the key's path where a check message uses it."""

    path: str


@dataclass(frozen=True)
class Closure:
    """A function defined inside the function being read, with the names it sees."""

    node: ast.FunctionDef
    module: str
    env: dict[str, Any]


@dataclass
class Key:
    """One key of a table as the reading code treats it."""

    name: str
    kind: str
    default: str | None  # None: required
    checks: list[str] = field(default_factory=list)
    doc: str = ""


@dataclass
class Table:
    """One TOML table (or array of tables) and its keys, in the order they are read."""

    path: str
    array: bool
    required: bool
    classes: list[ClassRef] = field(default_factory=list)
    keys: dict[str, Key] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    """Checks on the array as a whole (``[[gateway.clients]]``: at least one when enabled)."""
    waiting: dict[str, list[str]] = field(default_factory=dict)
    """Checks met before their key's ``get``."""

    def pending(self, key: str) -> list[str]:
        """Return the list collecting the checks of a key not read yet."""
        return self.waiting.setdefault(key, [])

    @property
    def header(self) -> str:
        """Return the TOML header of the table: ``[flow]`` or ``[[departments]]``."""
        return f"[[{self.path}]]" if self.array else f"[{self.path}]"


@dataclass(frozen=True)
class TableRef:
    """A reading-code value that is a ``_Table``: the path of the table it reads."""

    path: str


class Modules:
    """Parsed modules of the ``node`` package, read on demand from their files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.trees: dict[str, ast.Module] = {}

    def tree(self, module: str) -> ast.Module:
        """Return the syntax tree of ``module`` (``node.config``)."""
        if module not in self.trees:
            path = self.root.joinpath(*module.split(".")).with_suffix(".py")
            self.trees[module] = ast.parse(path.read_text(encoding="utf-8"), str(path))
        return self.trees[module]

    def lookup(self, module: str, name: str) -> tuple[str, ast.AST] | None:
        """Find what ``name`` is at the top level of ``module``, following ``from`` imports."""
        for statement in self.tree(module).body:
            if isinstance(statement, ast.FunctionDef | ast.ClassDef) and statement.name == name:
                return module, statement
            if isinstance(statement, ast.Assign):
                for target in statement.targets:
                    found = _assigned(target, statement.value, name)
                    if found is not None:
                        return module, found
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and statement.target.id == name
                and statement.value is not None
            ):
                return module, statement.value
            if isinstance(statement, ast.ImportFrom) and statement.module:
                for alias in statement.names:
                    if (alias.asname or alias.name) == name and statement.module.startswith("node"):
                        return self.lookup(statement.module, alias.name)
        return None

    def dataclass_fields(self, cls: ClassRef) -> dict[str, tuple[ast.expr, ast.expr | None, str]]:
        """Return each field of a dataclass: annotation, default expression and docstring."""
        found = self.lookup(cls.module, cls.name)
        if found is None or not isinstance(found[1], ast.ClassDef):
            return {}
        fields: dict[str, tuple[ast.expr, ast.expr | None, str]] = {}
        body = found[1].body
        for index, statement in enumerate(body):
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                doc = ""
                following = body[index + 1] if index + 1 < len(body) else None
                if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                    doc = str(following.value.value)
                fields[statement.target.id] = (statement.annotation, statement.value, doc)
        return fields

    def class_doc(self, cls: ClassRef) -> str:
        """Return the docstring of a class, or ''."""
        found = self.lookup(cls.module, cls.name)
        if found is None or not isinstance(found[1], ast.ClassDef):
            return ""
        return ast.get_docstring(found[1]) or ""

    def classes_in(self, module: str, annotation: ast.expr | None) -> list[ClassRef]:
        """Return the dataclasses an annotation names (``tuple[Department, ...]``, ``X | None``)."""
        if annotation is None:
            return []
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            annotation = ast.parse(annotation.value, mode="eval").body
        refs: list[ClassRef] = []
        for node in ast.walk(annotation):
            if isinstance(node, ast.Name):
                found = self.lookup(module, node.id)
                if (
                    found is not None
                    and isinstance(found[1], ast.ClassDef)
                    and any(_is_dataclass_decorator(d) for d in found[1].decorator_list)
                ):
                    refs.append(ClassRef(found[0], node.id))
        return refs


def _assigned(target: ast.expr, value: ast.expr, name: str) -> ast.expr | None:
    """Return the expression assigned to ``name`` by ``target = value`` (tuples unpacked)."""
    if isinstance(target, ast.Name) and target.id == name:
        return value
    if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
        for sub_target, sub_value in zip(target.elts, value.elts, strict=False):
            found = _assigned(sub_target, sub_value, name)
            if found is not None:
                return found
    return None


def _is_dataclass_decorator(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Name) and target.id == "dataclass"


class Reader:
    """Follows the reading code from ``parse_config`` and collects every table and key."""

    def __init__(self, modules: Modules) -> None:
        self.modules = modules
        self.tables: dict[str, Table] = {}
        self.depth = 0

    # --- values -------------------------------------------------------------------------------

    def value(self, node: ast.expr, module: str, env: dict[str, Any]) -> Any:
        """Evaluate an expression as far as the source allows; record what its calls read."""
        self.visit_calls(node, module, env)
        return self.evaluate(node, module, env)

    def evaluate(self, node: ast.expr, module: str, env: dict[str, Any]) -> Any:
        """Evaluate without recording (calls are recorded by :meth:`visit_calls`)."""
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.name(node.id, module, env)
        if isinstance(node, ast.JoinedStr):
            return self.joined(node, module, env)
        if isinstance(node, ast.List | ast.Tuple):
            items = [self.evaluate(e, module, env) for e in node.elts]
            if any(isinstance(i, Unknown) for i in items):
                return Unknown(ast.unparse(node))
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand = self.evaluate(node.operand, module, env)
            return -operand if isinstance(operand, int | float) else Unknown(ast.unparse(node))
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return self.arithmetic(node, module, env)
        if isinstance(node, ast.Attribute):
            owner = self.evaluate(node.value, module, env)
            if isinstance(owner, Instance):
                return self.field_default(owner.cls, node.attr)
            if isinstance(owner, Unknown):  # made.completeness_bucket_s: a value read before
                return Unknown(node.attr)
            return Unknown(ast.unparse(node))
        if isinstance(node, ast.Call):
            return self.call_value(node, module, env)
        return Unknown(ast.unparse(node))

    def arithmetic(self, node: ast.BinOp, module: str, env: dict[str, Any]) -> Any:
        """Compute constant arithmetic (``64 * 1024 * 1024``); keep the rest as a formula."""
        left = self.evaluate(node.left, module, env)
        right = self.evaluate(node.right, module, env)
        symbol, operation = _OPERATORS[type(node.op)]
        numbers = (int, float)
        if isinstance(left, numbers) and isinstance(right, numbers):
            return operation(left, right)
        return Unknown(f"{_operand(left)} {symbol} {_operand(right)}")

    def name(self, name: str, module: str, env: dict[str, Any]) -> Any:
        """Resolve a name: the reading code's variables first, then module constants."""
        if name in env:
            return env[name]
        if name in _KINDS:
            return ast.Name(name)
        found = self.modules.lookup(module, name)
        if found is None:
            return Unknown(name)
        where, definition = found
        if isinstance(definition, ast.ClassDef):
            return ClassRef(where, name)
        if isinstance(definition, ast.FunctionDef):
            return Closure(definition, where, {})
        return self.evaluate(definition, where, {})  # type: ignore[arg-type]

    def joined(self, node: ast.JoinedStr, module: str, env: dict[str, Any]) -> str | Partial:
        """Evaluate an f-string; the parts that stay unknown are kept as their source text."""
        known: list[str] = []
        rest: list[str] | None = None  # from the first unknown part on
        for part in node.values:
            if isinstance(part, ast.Constant):
                text = str(part.value)
            else:
                assert isinstance(part, ast.FormattedValue)
                inner = self.evaluate(part.value, module, env)
                spec: str | Partial = ""
                if isinstance(part.format_spec, ast.JoinedStr):
                    spec = self.joined(part.format_spec, module, env)
                if isinstance(inner, KeyValue):
                    text = f"`{inner.path}`"
                elif (
                    isinstance(inner, str | int | float)
                    and not isinstance(inner, bool)
                    and isinstance(spec, str)
                ):
                    text = format(inner, spec)
                else:
                    shown = inner.text if isinstance(inner, Unknown) else ast.unparse(part.value)
                    text = f"`{shown}`"
                    rest = [] if rest is None else rest
            (known if rest is None else rest).append(text)
        return "".join(known) if rest is None else Partial("".join(known), "".join(rest))

    def field_default(self, cls: ClassRef, attribute: str) -> Any:
        """Return the default of a dataclass field (evaluated), or Unknown."""
        fields = self.modules.dataclass_fields(cls)
        if attribute not in fields or fields[attribute][1] is None:
            return Unknown(f"{cls.name}.{attribute}")
        default = fields[attribute][1]
        assert default is not None
        return self.evaluate(default, cls.module, {})

    def call_value(self, node: ast.Call, module: str, env: dict[str, Any]) -> Any:
        """Return what a call gives the reading code: a table, a default-valued instance, ..."""
        func = node.func
        if isinstance(func, ast.Attribute):
            owner = self.evaluate(func.value, module, env)
            if isinstance(owner, TableRef):
                if func.attr == "table" and node.args:
                    return TableRef(_join(owner.path, self.key_text(node.args[0], module, env)))
                if func.attr == "get" and node.args:
                    return KeyValue(_join(owner.path, self.key_text(node.args[0], module, env)))
                if func.attr == "field_path" and node.args:
                    return _join(owner.path, self.key_text(node.args[0], module, env))
            if isinstance(owner, str) and func.attr == "join" and len(node.args) == 1:
                items = self.evaluate(node.args[0], module, env)
                if isinstance(items, list | tuple) and all(isinstance(i, str) for i in items):
                    return owner.join(items)
            return Unknown(ast.unparse(node))
        callee = self.evaluate(func, module, env)
        if isinstance(callee, ClassRef):
            if callee.name == "_Table" and len(node.args) == 2:
                return TableRef(self.key_text(node.args[1], module, env))
            if not node.args and not node.keywords:
                return Instance(callee)
        if isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) == 2:
            owner = self.evaluate(node.args[0], module, env)
            attribute = self.evaluate(node.args[1], module, env)
            if isinstance(owner, Instance) and isinstance(attribute, str):
                return self.field_default(owner.cls, attribute)
        return Unknown(ast.unparse(node))

    def key_text(self, node: ast.expr, module: str, env: dict[str, Any]) -> str:
        """Return a key (or table path) as text; ``children[i]`` becomes ``children[]``."""
        value = self.evaluate(node, module, env)
        if isinstance(value, str):
            text = value
        elif isinstance(value, Partial) and "[" in value.known:
            text = value.known
        elif isinstance(value, Partial):
            text = value.known + value.rest
        elif isinstance(value, Unknown) and value.text.isidentifier():
            text = f"<{value.text.upper()}>"
        elif isinstance(value, KeyValue | Unknown) and isinstance(node, ast.Name):
            text = f"<{node.id.upper()}>"
        else:
            text = f"<{ast.unparse(node)}>"
        return re.sub(r"\[[^\]]*\]?$", "[]", text) if "[" in text else text

    # --- recording ------------------------------------------------------------------------------

    def visit_calls(self, node: ast.AST, module: str, env: dict[str, Any]) -> None:
        """Record the reading calls inside an expression (not inside lambdas), outermost last."""
        if isinstance(node, ast.Lambda):
            return
        if isinstance(node, ast.GeneratorExp | ast.ListComp | ast.SetComp):
            self.comprehension(node, module, env)
            return
        for child in ast.iter_child_nodes(node):
            self.visit_calls(child, module, env)
        if isinstance(node, ast.Call):
            self.record_call(node, module, env)

    def comprehension(
        self, node: ast.GeneratorExp | ast.ListComp | ast.SetComp, module: str, env: dict[str, Any]
    ) -> None:
        """Follow ``f(k) for k in ("a", "b")`` once per literal item, else once with it unknown."""
        if len(node.generators) != 1:
            return
        generator = node.generators[0]
        items = self.evaluate(generator.iter, module, env)
        if not isinstance(items, list | tuple):
            items = [Unknown(ast.unparse(generator.target))]
        for item in items:
            inner = dict(env)
            if isinstance(generator.target, ast.Name):
                inner[generator.target.id] = item
            self.visit_calls(node.elt, module, inner)

    def record_call(self, node: ast.Call, module: str, env: dict[str, Any]) -> None:
        """Record one call: a key read, a check, a table opened, or a helper to follow."""
        func = node.func
        if isinstance(func, ast.Attribute):
            owner = self.evaluate(func.value, module, env)
            if isinstance(owner, TableRef):
                self.table_method(owner, func.attr, node, module, env)
            return
        callee = self.evaluate(func, module, env)
        if isinstance(callee, ClassRef) and callee.name == "ConfigError" and node.args:
            self.config_error(node, module, env)
        elif isinstance(callee, ClassRef) and callee.name == "_Table" and len(node.args) == 2:
            path = self.key_text(node.args[1], module, env)
            self.table(path, required=False)
        elif isinstance(callee, Closure):
            self.follow(callee, node, module, env)

    def table_method(
        self, owner: TableRef, method: str, node: ast.Call, module: str, env: dict[str, Any]
    ) -> None:
        """Record ``get``, ``check`` and ``table`` on a table being read."""
        if not node.args:
            return
        key = self.key_text(node.args[0], module, env)
        table = self.table(owner.path, required=False)
        if method == "table":
            required = any(
                k.arg == "required" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            self.table(_join(owner.path, key), required=required)
        elif method == "get":
            self.record_get(table, key, node, module, env)
        elif method == "check" and len(node.args) >= 3:
            name = key.removesuffix("[]")
            expected = self.message(node.args[2], module, env)
            text = f"each item: {expected}" if key.endswith("[]") else expected
            checks = table.keys[name].checks if name in table.keys else table.pending(name)
            if text not in checks:
                checks.append(text)

    def record_get(
        self, table: Table, key: str, node: ast.Call, module: str, env: dict[str, Any]
    ) -> None:
        """Record a key read with ``get(KEY, KIND[, DEFAULT])``."""
        kind = self.evaluate(node.args[1], module, env) if len(node.args) > 1 else None
        kind_name = kind.id if isinstance(kind, ast.Name) else ast.unparse(node.args[1])
        default: str | None = None
        if len(node.args) > 2:
            default = _toml(self.evaluate(node.args[2], module, env))
        if key not in table.keys:
            checks = table.waiting.pop(key, [])
            table.keys[key] = Key(key, _KINDS.get(kind_name, kind_name), default, checks)

    def config_error(self, node: ast.Call, module: str, env: dict[str, Any]) -> None:
        """Record ``raise ConfigError(TABLE.field_path(KEY), MESSAGE)`` as a check on KEY."""
        target = node.args[0]
        if not (
            isinstance(target, ast.Call)
            and isinstance(target.func, ast.Attribute)
            and target.func.attr == "field_path"
            and target.args
            and len(node.args) > 1
        ):
            return
        owner = self.evaluate(target.func.value, module, env)
        if not isinstance(owner, TableRef):
            return
        key = self.key_text(target.args[0], module, env)
        table = self.table(owner.path, required=False)
        checks = table.keys[key].checks if key in table.keys else table.pending(key)
        checks.append(self.message(node.args[1], module, env))

    def message(self, node: ast.expr, module: str, env: dict[str, Any]) -> str:
        """Render a check's "expected ..." message."""
        value = self.evaluate(node, module, env)
        if isinstance(value, Partial):
            return value.known + value.rest
        return value if isinstance(value, str) else f"`{ast.unparse(node)}`"

    def table(self, path: str, *, required: bool) -> Table:
        """Return the table at ``path``, registering it the first time it is seen."""
        if path not in self.tables:
            array = path.endswith("[]")
            self.tables[path] = Table(path.removesuffix("[]"), array, required)
        table = self.tables[path]
        table.required = table.required or required
        return table

    # --- following functions ----------------------------------------------------------------------

    def follow(self, callee: Closure, call: ast.Call, module: str, env: dict[str, Any]) -> None:
        """Walk a helper's body with its parameters bound to the call's arguments."""
        if self.depth >= MAX_DEPTH:
            return
        function = callee.node
        names = [a.arg for a in function.args.args]
        if not any(isinstance(self.evaluate(a, module, env), TableRef) for a in call.args) and (
            not callee.env
        ):
            return  # reads no table: a predicate such as _bootstrap_ok
        inner = dict(callee.env)
        for name, argument in zip(names, call.args, strict=False):
            inner[name] = self.evaluate(argument, module, env)
        for keyword in call.keywords:
            if keyword.arg is not None:
                inner[keyword.arg] = self.evaluate(keyword.value, module, env)
        returned = self.modules.classes_in(callee.module, function.returns)
        for bound in inner.values():
            if isinstance(bound, TableRef):
                table = self.table(bound.path, required=False)
                table.classes.extend(c for c in returned if c not in table.classes)
        self.depth += 1
        try:
            self.body(function.body, callee.module, inner)
        finally:
            self.depth -= 1

    def body(self, statements: list[ast.stmt], module: str, env: dict[str, Any]) -> None:
        """Walk statements in order, binding assignments and recording calls."""
        for statement in statements:
            if isinstance(statement, ast.FunctionDef):
                env[statement.name] = Closure(statement, module, env)
            elif isinstance(statement, ast.Assign):
                value = self.value(statement.value, module, env)
                for target in statement.targets:
                    self.bind(target, statement.value, value, module, env)
            elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                value = self.value(statement.value, module, env)
                self.bind(statement.target, statement.value, value, module, env)
            elif isinstance(statement, ast.For):
                self.value(statement.iter, module, env)
                for name in ast.walk(statement.target):
                    if isinstance(name, ast.Name):
                        env[name.id] = Unknown(name.id)
                self.body(statement.body, module, env)
            elif isinstance(statement, ast.If | ast.While):
                self.value(statement.test, module, env)
                self.body(statement.body, module, env)
                self.body(statement.orelse, module, env)
            elif isinstance(statement, ast.With | ast.Try):
                self.body(statement.body, module, env)
            elif isinstance(statement, ast.Expr | ast.Return | ast.Raise):
                expression = statement.exc if isinstance(statement, ast.Raise) else statement.value
                if expression is not None:
                    self.value(expression, module, env)

    def bind(
        self, target: ast.expr, source: ast.expr, value: Any, module: str, env: dict[str, Any]
    ) -> None:
        """Bind an assignment target; tuples from a generator are bound item by item."""
        if isinstance(target, ast.Name):
            env[target.id] = value
        elif isinstance(target, ast.Tuple):
            for index, element in enumerate(target.elts):
                if isinstance(element, ast.Name):
                    env[element.id] = Unknown(f"{ast.unparse(source)}[{index}]")

    def read(self) -> list[Table]:
        """Follow ``parse_config`` and return the tables in the order they are read."""
        found = self.modules.lookup(CONFIG_MODULE, ENTRY)
        assert found is not None, ENTRY
        assert isinstance(found[1], ast.FunctionDef), ENTRY
        function = found[1]
        root = TableRef("")
        env: dict[str, Any] = {}
        self.table("", required=True)
        for argument in function.args.args:
            env[argument.arg] = root
        for statement in function.body:
            if (
                isinstance(statement, ast.Assign)
                and isinstance(statement.value, ast.Call)
                and isinstance(statement.value.func, ast.Name)
                and statement.value.func.id == "_Table"
            ):
                for target in statement.targets:
                    if isinstance(target, ast.Name):
                        env[target.id] = root
            else:
                self.body([statement], CONFIG_MODULE, env)
        for path, table in list(self.tables.items()):
            for name in list(table.keys):
                array = self.tables.get(f"{_join(path, name)}[]")
                if array is not None:  # the array of tables itself, described as a table
                    array.checks.extend(table.keys.pop(name).checks)
        self.describe()
        return [t for t in self.tables.values() if t.path and (t.keys or t.array)]

    def describe(self) -> None:
        """Attach dataclasses and docstrings: the top class's field named like each table."""
        top = ClassRef(CONFIG_MODULE, TOP_CLASS)
        for path, table in self.tables.items():
            if not path:
                continue
            parent_path, _, name = path.removesuffix("[]").rpartition(".")
            parents = (
                [top]
                if not parent_path
                else self.tables[_table_key(self.tables, parent_path)].classes
            )
            for parent in parents:
                fields = self.modules.dataclass_fields(parent)
                if name in fields:
                    refs = self.modules.classes_in(parent.module, fields[name][0])
                    table.classes[:0] = [r for r in refs if r not in table.classes]
            if not table.classes and not parent_path:
                table.classes.append(top)  # [node]: read straight into NodeConfig
            for key in table.keys.values():
                key.doc = self.key_doc(table.classes, key.name)

    def key_doc(self, classes: list[ClassRef], name: str) -> str:
        """Return the docstring of the field ``name`` in the classes (or their nested ones)."""
        for cls in classes:
            fields = self.modules.dataclass_fields(cls)
            if name in fields and fields[name][2]:
                return fields[name][2]
        for cls in classes:
            for annotation, _, _ in self.modules.dataclass_fields(cls).values():
                nested = self.modules.classes_in(cls.module, annotation)
                doc = self.key_doc([n for n in nested if n not in classes], name) if nested else ""
                if doc:
                    return doc
        return ""


_OPERATORS: dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Pow: ("**", operator.pow),
}


def _operand(value: Any) -> str:
    if isinstance(value, Unknown):
        return f"({value.text})" if " " in value.text else value.text
    if isinstance(value, KeyValue):
        return value.path
    return repr(value)


def _table_key(tables: dict[str, Table], path: str) -> str:
    return path if path in tables else f"{path}[]"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _last(path: str) -> str:
    return path.removesuffix("[]").rpartition(".")[2]


def _toml(value: Any) -> str:
    """Render a default as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '""' if not value else f'"{value}"'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Unknown):
        return f"`{value.text}`"
    return f"`{value!r}`"


def _cell(text: str) -> str:
    """Flatten a docstring into one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|") or "—"


def render(tables: list[Table], modules: Modules) -> str:
    """Return the Markdown reference."""
    module_doc = ast.get_docstring(modules.tree(CONFIG_MODULE)) or ""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by tools/config_reference.py from node/config.py: do not edit by hand.",
        "     Regenerate with `make docs`; tests/unit/test_deploy_files.py fails when stale. -->",
        "",
        " ".join(module_doc.split()),
        "",
        "One TOML file per node; check it with `exchange-node check-config FILE` (exit 0, or 2",
        "naming the field). Types are TOML types; *required* keys have no default. A table that is",
        "not required may be left out, and every key in it then takes its default. Commented",
        "examples: `deploy/examples/`.",
        "",
        "| table | required | what |",
        "| --- | --- | --- |",
    ]
    for table in tables:
        doc = modules.class_doc(table.classes[0]) if table.classes else ""
        anchor = re.sub(r"[^a-z0-9_-]", "", table.header.replace(".", "").lower())
        lines.append(
            f"| [`{table.header}`](#{anchor}) | {'yes' if table.required else 'no'} "
            f"| {_cell(doc.split(chr(10) + chr(10))[0])} |"
        )
    for table in tables:
        lines += ["", f"## `{table.header}`", ""]
        doc = modules.class_doc(table.classes[0]) if table.classes else ""
        if doc:
            lines += [" ".join(doc.split()), ""]
        if table.classes:
            names = ", ".join(f"`{c.module}.{c.name}`" for c in table.classes)
            lines += [f"Read into {names}.", ""]
        if table.checks:
            lines += [f"Checked as a whole: {'; '.join(table.checks)}.", ""]
        lines += [
            "| key | type | default | checks | description |",
            "| --- | --- | --- | --- | --- |",
        ]
        for key in table.keys.values():
            default = "*required*" if key.default is None else f"`{key.default}`"
            if key.default is not None and key.default.startswith("`"):
                default = key.default
            checks = "; ".join(key.checks)
            lines.append(
                f"| `{key.name}` | {key.kind} | {default} | {_cell(checks)} | {_cell(key.doc)} |"
            )
    return "\n".join(lines) + "\n"


def generate(root: Path = ROOT) -> str:
    """Read ``node/config.py`` under ``root`` and return the reference's text."""
    modules = Modules(root)
    return render(Reader(modules).read(), modules)


def reference_keys(root: Path = ROOT) -> dict[str, list[str]]:
    """Return, per table path (``departments[]`` for an array), the keys the reference lists."""
    return {
        (f"{t.path}[]" if t.array else t.path): list(t.keys) for t in Reader(Modules(root)).read()
    }


def main(argv: list[str] | None = None) -> int:
    """Write the reference, or with ``--check`` compare it; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current == text:
            print(f"{args.output}: up to date")
            return 0
        diff = difflib.unified_diff(
            current.splitlines(), text.splitlines(), str(args.output), "generated", lineterm=""
        )
        print("\n".join(list(diff)[:60]), file=sys.stderr)
        print(f"{args.output} is stale: run `make docs`", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
