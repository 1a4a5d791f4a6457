"""Classifying SQL statements for the PDP: what they do, to which data, and how.

Every statement gets an operation from the model's vocabulary, the tables it reads and
writes, the columns it reads, every function it calls, the settings it changes, flags for
constructs that deserve the policy's attention (DML inside a CTE, `DO`, `COPY ... PROGRAM`,
`set_config`, SQL-level `EXECUTE`, a star over labelled data), the data labels it touches
and, for each output column, the labels that flow into it (for masking).

Names and strings are first rewritten as PostgreSQL reads them (`sqlident`), SET and
transaction modes are read from tokens (`sqlsession`), SQL held in strings is classified
as the statement it is, and calls are matched against the database's functions when
known (`Catalog.routines`) or PostgreSQL's own (`sqlfunctions`). Resolution is
deliberately conservative: an unqualified column counts as every labelled column of that
name in the statement's tables, `*` counts as every labelled column of the tables it
covers, and a bare table alias used as a value (`row_to_json(p)`) counts as the whole
row. Anything sqlglot cannot parse, or where its statement boundaries differ from
PostgreSQL's (see `sqlsplit`), is one statement of kind `unparsed`, which the bundled
policy denies.
"""

from __future__ import annotations

import itertools
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from interlock.classify.sqlfunctions import (
    BUILTIN_FUNCTIONS,
    CURSOR_FUNCTIONS,
    FILE_RELATIONS,
    SQL_TEXT_ARGUMENT,
    TABLE_ARGUMENT,
    VALUE_RELATIONS,
    WHOLE_DATABASE_FUNCTIONS,
    WHOLE_ROW_FUNCTIONS,
    WRITING_FUNCTIONS,
    risky,
)
from interlock.classify.sqlident import (
    LexError,
    Token,
    fold,
    normalised,
    qualified_name,
    truncate,
)
from interlock.classify.sqlsession import SENSITIVE_SETTINGS, SessionStatement, session_statement
from interlock.classify.sqlsplit import SplitError, shape, split
from interlock.core.model import Operation, freeze

DEFAULT_SCHEMA = "public"
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
COMPILED_LANGUAGES = frozenset({"internal", "c"})
"""Languages of functions installed by the server or extensions, not written by users."""
CACHE_SIZE = 4096
_FRACTIONAL = re.compile(r"[0-9](?:\.[0-9]|[eE])")
"""A digit before a fraction or an exponent: text that may hold a non-integer number."""
_ADMIN_COMMANDS = frozenset(
    {
        "VACUUM",
        "ANALYZE",
        "CLUSTER",
        "REINDEX",
        "CHECKPOINT",
        "ALTER SYSTEM",
        "REFRESH",
        "SECURITY",
        "LISTEN",
        "NOTIFY",
        "UNLISTEN",
        "DISCARD",
        "LOCK",
        "IMPORT",
    }
)


@dataclass(frozen=True, slots=True)
class Routine:
    """One pg_proc row: what the classifier needs to know about a function."""

    schema: str  # pg_namespace.nspname, exact
    name: str  # pg_proc.proname, exact
    volatility: str  # pg_proc.provolatile: "i", "s" or "v"
    security_definer: bool
    language: str  # pg_language.lanname
    kind: str  # pg_proc.prokind: "f", "p", "a", "w"


def _key(name: str) -> str:
    """A catalog key compared the way that errs to over-matching: each part truncated as
    the server truncates names, then lower-cased (so a quoted "Salary" and a discovered,
    lower-cased salary meet)."""
    return ".".join(truncate(part).lower() for part in name.split("."))


@dataclass(frozen=True, slots=True)
class Catalog:
    """What the classifier knows of the database: column labels ("schema.table.column"
    -> labels) and, once loaded from pg_proc, its functions (proname -> every overload)."""

    labels: Mapping[str, frozenset[str]] = field(default_factory=dict)
    routines: Mapping[str, tuple[Routine, ...]] = field(default_factory=dict)
    routines_known: bool = False
    """True once `routines` was loaded from the database: a name it lacks is new."""
    _folded: dict[str, frozenset[str]] = field(init=False, repr=False, compare=False)
    _routines_folded: dict[str, tuple[Routine, ...]] = field(init=False, repr=False, compare=False)
    _tables: dict[str, set[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        folded: dict[str, frozenset[str]] = {}
        for k, v in self.labels.items():
            folded[_key(k)] = folded.get(_key(k), frozenset()) | frozenset(v)
        by_name: dict[str, tuple[Routine, ...]] = {}
        for name, routines in self.routines.items():
            by_name[name.lower()] = by_name.get(name.lower(), ()) + tuple(routines)
        tables: dict[str, set[str]] = {}
        for k in folded:
            schema_table = k.rsplit(".", 1)[0]
            tables.setdefault(schema_table.split(".", 1)[-1], set()).add(schema_table)
        object.__setattr__(self, "_folded", folded)
        object.__setattr__(self, "_routines_folded", by_name)
        object.__setattr__(self, "_tables", tables)

    @classmethod
    def from_config(cls, mapping: Mapping[str, Iterable[str]]) -> Catalog:
        return cls({k.lower(): frozenset(v) for k, v in mapping.items()})

    def column(self, table: str, column: str) -> frozenset[str]:
        return self._folded.get(_key(f"{table}.{column}"), frozenset())

    def columns(self, table: str) -> dict[str, frozenset[str]]:
        prefix = _key(table) + "."
        return {k[len(prefix) :]: v for k, v in self._folded.items() if k.startswith(prefix)}

    def schemas_of(self, table: str) -> set[str]:
        """Every labelled "schema.table" of this table name, in any schema: what an
        unqualified name may resolve to (`"$user"` comes before public on the default
        search_path)."""
        return self._tables.get(_key(table), set())

    @property
    def all_labels(self) -> frozenset[str]:
        return frozenset().union(*self._folded.values())

    def candidates(self, name: str, schema: str | None = None) -> tuple[Routine, ...]:
        """Every function the server may run for a call of `name` (any overload; in
        `schema` only when the call is qualified), matched case-insensitively."""
        found = self._routines_folded.get(name.lower(), ())
        if schema is None:
            return found
        return tuple(r for r in found if r.schema.lower() == schema.lower())


@dataclass(frozen=True, slots=True)
class SqlStatement:
    text: str
    """The statement's text; from a cache, that of the first statement of its shape (its
    numbers may differ from the one being decided)."""
    kind: str
    operation: Operation
    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    columns: frozenset[str] = frozenset()
    functions: frozenset[str] = frozenset()
    settings: tuple[str, ...] = ()
    flags: frozenset[str] = frozenset()
    labels: frozenset[str] = frozenset()
    output_labels: tuple[frozenset[str], ...] | None = None
    """Labels per output column, or None when the positions are not known (a star, a set
    operation, SQL text, a whole-table or user-defined function)."""
    name: str | None = None
    """The prepared-statement name of SQL-level PREPARE / EXECUTE / DEALLOCATE."""
    written_labels: frozenset[str] = frozenset()
    """Labels of values the statement may store somewhere (INSERT ... SELECT, UPDATE SET,
    CREATE ... AS, SELECT INTO, a function that writes): data that would outlive a mask."""


@dataclass(frozen=True, slots=True)
class SqlClassification:
    statements: tuple[SqlStatement, ...]
    _memo: dict[str, Any] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    """What is derived from `statements` for the policy, derived once: a cached
    classification is asked again for every statement of its shape."""

    @property
    def operation(self) -> Operation:
        found = self._memo.get("operation")
        if found is None:
            found = self._memo["operation"] = max(
                (s.operation for s in self.statements), key=_severity, default=Operation.READ
            )
        return cast(Operation, found)

    @property
    def labels(self) -> frozenset[str]:
        found = self._memo.get("labels")
        if found is None:
            found = self._memo["labels"] = frozenset().union(*(s.labels for s in self.statements))
        return cast(frozenset[str], found)

    @property
    def flags(self) -> frozenset[str]:
        return frozenset().union(*(s.flags for s in self.statements))

    def details(self) -> dict[str, object]:
        """Compact features for the policy input (docs/postgres.md)."""
        s = self.statements
        details: dict[str, object] = {
            "statements": [st.kind for st in s],
            "reads": sorted(frozenset().union(*(x.reads for x in s))),
            "writes": sorted(frozenset().union(*(x.writes for x in s))),
            "columns": sorted(frozenset().union(*(x.columns for x in s)))[:64],
            "functions": sorted(frozenset().union(*(x.functions for x in s))),
            "settings": sorted({v for x in s for v in x.settings}),
            "flags": sorted(self.flags),
        }
        if any(x.operation is Operation.EXEC for x in s):
            # A function or procedure that may write: `read_only` forbids it (the
            # posture rule reads effects, as for SSH commands, where exec alone is not
            # a write).
            details["effects"] = ["write"]
        return details

    def frozen_details(self) -> Mapping[str, Any]:
        """`details()` as `freeze` makes it (what an Action holds), built once."""
        found = self._memo.get("details")
        if found is None:
            found = self._memo["details"] = freeze(self.details())
        return cast(Mapping[str, Any], found)


_ORDER = [Operation.READ, Operation.WRITE, Operation.EXEC, Operation.DDL, Operation.ADMIN]


def _severity(op: Operation) -> int:
    return _ORDER.index(op) if op in _ORDER else len(_ORDER)


def _ident(node: exp.Expression | None) -> str:
    """A name as the server resolves it (quoted names were made exact by `normalise`)."""
    if node is None:
        return ""
    if isinstance(node, exp.Identifier):
        name = str(node.this)
        return truncate(name) if node.quoted else fold(name)
    return fold(str(node.name))


def _table_name(t: exp.Table) -> str:
    schema = _ident(t.args.get("db")) or DEFAULT_SCHEMA
    return f"{schema}.{_ident(t.this)}"


def _of[T: exp.Expr](nodes: list[exp.Expr], *types: type[T]) -> list[T]:
    """The nodes of these types, in walk order: one walk of a statement's tree serves
    every question the classifier asks of it (find_all walks the tree each time)."""
    return [n for n in nodes if isinstance(n, types)]


class _Scope:
    """Tables of one statement, by alias and by name."""

    def __init__(self, nodes: list[exp.Expr], catalog: Catalog) -> None:
        self.catalog = catalog
        ctes = {
            _ident(c.args["alias"].this)
            for c in _of(nodes, exp.CTE)
            if c.args.get("alias") is not None
        }
        self.aliases: dict[str, str] = {}
        self.tables: set[str] = set()
        self.unqualified: set[str] = set()
        """Tables named without a schema: they may be any schema's table of that name."""
        self.renamed: set[str] = set()
        """Tables whose columns a FROM alias renames (`payroll AS t(a, b, c)`): any
        column may be any of theirs."""
        self.derived: dict[str, frozenset[str]] = {}
        """Subquery and CTE names -> every label their bodies touch (conservative)."""
        for t in _of(nodes, exp.Table):
            if not isinstance(t.this, exp.Identifier):
                continue
            name = _table_name(t)
            if _ident(t.this) in ctes and not t.args.get("db"):
                continue
            self.tables.add(name)
            if not t.args.get("db"):
                self.unqualified.add(name)
            alias = t.args.get("alias")
            if alias is not None and alias.args.get("columns"):
                self.renamed.add(name)
            self.aliases[_ident(alias.this) if alias is not None else _ident(t.this)] = name
            self.aliases.setdefault(_ident(t.this), name)

    def add_derived(self, nodes: list[exp.Expr]) -> None:
        sources: list[tuple[str, exp.Expression]] = []
        for cte in _of(nodes, exp.CTE):
            alias = cte.args.get("alias")
            if alias is not None:
                sources.append((_ident(alias.this), cte.this))
        for sub in _of(nodes, exp.Subquery, exp.Lateral):
            alias = sub.args.get("alias")
            body = sub.this.this if isinstance(sub.this, exp.Subquery) else sub.this
            if alias is not None:
                sources.append((_ident(alias.this), body))
            elif isinstance(sub.parent, (exp.From, exp.Join)):
                sources.append(("", body))  # PostgreSQL 16 allows FROM (...) unnamed
        for item in _of(nodes, exp.From, exp.Join):
            source = item.this
            if isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier):
                continue
            if not isinstance(source, (exp.Subquery, exp.Lateral)):
                # A function or VALUES in FROM: its columns carry what its arguments read.
                alias = source.args.get("alias")
                sources.append((_ident(alias.this) if alias is not None else "", source))
        for name, body in sources:
            labels: set[str] = set()
            for c in body.find_all(exp.Column):
                for lab in self.resolve(c).values():
                    labels |= lab
            if any(not isinstance(x.parent, exp.Count) for x in body.find_all(exp.Star)):
                for lab in self.labelled(self.tables).values():
                    labels |= lab
            self.derived[name] = frozenset(labels) | self.derived.get(name, frozenset())

    def _candidates(self, table: str) -> set[str]:
        if table in self.unqualified:
            return {table} | self.catalog.schemas_of(table.split(".", 1)[1])
        return {table}

    def labelled(self, tables: Iterable[str]) -> dict[str, frozenset[str]]:
        out: dict[str, frozenset[str]] = {}
        for table in tables:
            for candidate in self._candidates(table):
                for col, labels in self.catalog.columns(candidate).items():
                    out[f"{candidate}.{col}"] = labels
        return out

    def column(self, table: str, name: str) -> frozenset[str]:
        return frozenset().union(*(self.catalog.column(t, name) for t in self._candidates(table)))

    def resolve(self, col: exp.Column) -> dict[str, frozenset[str]]:
        """Qualified column -> labels for one column reference (conservatively)."""
        found = self._resolve(col)
        if self.renamed and not isinstance(col.this, exp.Star):
            found.update(self.labelled(self.renamed))
        return found

    def _row_function(self, name: str) -> bool:
        """Whether `q.name` may be the call name(q) of a function over the whole row."""
        return name in WHOLE_ROW_FUNCTIONS or any(
            r.schema not in SYSTEM_SCHEMAS for r in self.catalog.candidates(name)
        )

    def _resolve(self, col: exp.Column) -> dict[str, frozenset[str]]:
        qualifier = _ident(col.args.get("table"))
        if qualifier and qualifier in self.derived and qualifier not in self.aliases:
            return {f"{qualifier}.{_ident(col.this)}": self.derived[qualifier]}
        if isinstance(col.this, exp.Star):
            tables = [self.aliases[qualifier]] if qualifier in self.aliases else self.tables
            return self.labelled(tables)
        name = _ident(col.this)
        if qualifier:
            table = self.aliases.get(qualifier)
            if table is None:
                # Unknown qualifier: count everything in scope rather than nothing.
                return self.labelled(self.tables)
            labels = self.column(table, name)
            if not labels and self._row_function(name):
                return self.labelled([table])  # p.to_jsonb is to_jsonb(p)
            return {f"{table}.{name}": labels}
        if self.derived:
            derived = frozenset().union(*self.derived.values())
            found = {f"{t}.{name}": self.column(t, name) for t in self.tables}
            found[f"(derived).{name}"] = derived
            return found
        if name in self.aliases and not any(self.column(t, name) for t in self.tables):
            return self.labelled([self.aliases[name]])
        found = {f"{t}.{name}": self.column(t, name) for t in self.tables}
        return found or {name: frozenset()}


def _labels_of(
    node: exp.Expression, scope: _Scope, nodes: list[exp.Expr] | None = None
) -> tuple[set[str], set[str]]:
    nodes = list(node.walk()) if nodes is None else nodes
    cols: set[str] = set()
    labels: set[str] = set()
    for c in _of(nodes, exp.Column):
        for qualified, lab in scope.resolve(c).items():
            cols.add(qualified)
            labels |= lab
    for star in _of(nodes, exp.Star):
        # count(*) counts rows; it reads no column values.
        if not isinstance(star.parent, (exp.Column, exp.Count)):
            for qualified, lab in scope.labelled(scope.tables).items():
                cols.add(qualified)
                labels |= lab
    return cols, labels


@dataclass(frozen=True, slots=True)
class _Call:
    """One function call: its name as the server resolves it, and its schema if given."""

    name: str
    schema: str | None
    known: bool
    """Never an unknown function: sqlglot recognised it as one of SQL's own, or it is
    only possibly a call (attribute notation, a name the lexer sees before "(")."""
    node: exp.Func | None = None
    """The call in the tree; None for attribute notation (`x.f`)."""


def _calls(nodes: list[exp.Expr]) -> list[_Call]:
    out: list[_Call] = []
    for f in _of(nodes, exp.Func):
        if isinstance(f, exp.Anonymous):
            schema = None
            parent = f.parent
            if isinstance(parent, exp.Dot) and parent.expression is f:
                qualifier = parent.this
                if isinstance(qualifier, exp.Dot):
                    qualifier = qualifier.expression
                schema = _ident(qualifier) if isinstance(qualifier, exp.Identifier) else "?"
            this = f.this
            name = _ident(this) if isinstance(this, exp.Identifier) else fold(str(this))
            out.append(_Call(name, schema, False, f))
            continue
        out.append(_Call(f.sql_name().lower(), None, True, f))
        # The name PostgreSQL itself sees, e.g. generate_series for sqlglot's
        # ExplodingGenerateSeries.
        pg = f.sql(dialect="postgres").split("(", 1)[0].strip().lower()
        out.append(_Call(pg, None, True, f))
    # Attribute notation calls too: `x.f` is f(x) for a function of one argument
    # (`('/etc/hostname'::text).pg_read_file`, `p.zap`), unless x has a column f.
    for node in _of(nodes, exp.Column, exp.Dot):
        if isinstance(node, exp.Column) and node.args.get("table") is not None:
            attribute = node.this
        elif isinstance(node, exp.Dot):
            attribute = node.expression
        else:
            continue
        if isinstance(attribute, exp.Identifier):
            out.append(_Call(_ident(attribute), None, True))
    return out


def _lexical_calls(words: list[Token]) -> set[str]:
    """What the lexer sees called, whatever the parser made of it: names followed by "("
    (keywords, types and tables with column lists too, so only for exact names)."""
    out = set()
    for a, b in itertools.pairwise(words):
        if b.text == "(" and a.kind in ("word", "ident"):
            out.add(fold(a.text) if a.kind == "word" else a.text[1:-1].replace('""', '"'))
    return out


def _literal(node: exp.Expression | None) -> str | None:
    """The text of a string literal argument (possibly cast), None for anything else."""
    while isinstance(node, (exp.Cast, exp.Paren)):
        node = node.this
    if isinstance(node, exp.Literal) and node.is_string:
        return str(node.this)
    return None


@dataclass(slots=True)
class _Reach:
    """What a statement reaches beyond its own text: SQL in strings, whole tables and
    databases read by name, user code."""

    flags: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)
    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    columns: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    settings: list[str] = field(default_factory=list)
    operation: Operation = Operation.READ
    opaque: bool = False
    """Output lineage cannot be attributed."""

    def merge(self, inner: SqlClassification) -> None:
        for st in inner.statements:
            self.flags |= st.flags
            self.labels |= st.labels
            self.reads |= st.reads
            self.writes |= st.writes
            self.columns |= st.columns
            self.functions |= st.functions
            self.settings.extend(st.settings)
            self.operation = max(self.operation, st.operation, key=_severity)
        self.opaque = True

    def exec(self, flag: str) -> None:
        self.flags.add(flag)
        self.operation = max(self.operation, Operation.EXEC, key=_severity)


MAX_DEPTH = 4
"""SQL text inside SQL text inside ...: deeper than this is refused."""


_SQL_RUNNERS = (
    frozenset(SQL_TEXT_ARGUMENT)
    | TABLE_ARGUMENT
    | WHOLE_DATABASE_FUNCTIONS
    | CURSOR_FUNCTIONS
    | {"ts_rewrite"}
)
"""Functions that run SQL text or read tables named in strings."""


def _reach(calls: list[_Call], catalog: Catalog, depth: int) -> _Reach:
    r = _Reach()
    for call in calls:
        name = call.name
        if risky(name, families=call.node is not None):
            r.flags.add("risky_function")
        _routine(call, catalog, r)
        if call.node is None:
            if name in _SQL_RUNNERS:
                # ('select ...'::text).ts_stat: SQL text whose argument is not read here.
                r.flags.add("dynamic_sql")
            continue
        if name == "set_config":
            args = call.node.expressions if isinstance(call.node, exp.Anonymous) else []
            setting = _literal(args[0]) if args else None
            setting = setting.lower() if setting is not None else "?"
            r.settings.append(setting)
            r.flags.add("set_config")
            if setting in SENSITIVE_SETTINGS:
                r.flags.add("sensitive_setting")
        _embedded(call, catalog, depth, r)
    return r


def _embedded(call: _Call, catalog: Catalog, depth: int, r: _Reach) -> None:
    """SQL held in strings, and whole tables or databases named by strings."""
    name, node = call.name, call.node
    args = node.expressions if isinstance(node, exp.Anonymous) else None
    position = SQL_TEXT_ARGUMENT.get(name)
    if name == "ts_rewrite" and args is not None and len(args) == 2:
        position = 1
    if position is not None:
        text = _literal(args[position]) if args is not None and len(args) > position else None
        if text is None:
            r.flags.add("dynamic_sql")
            r.opaque = True
        elif depth >= MAX_DEPTH:
            r.flags |= {"dynamic_sql", "unparsed"}
        else:
            r.merge(_classify(text, catalog, depth + 1))
    elif name in TABLE_ARGUMENT:
        r.opaque = True
        text = _literal(args[0]) if args else None
        try:
            parts = qualified_name(text) if text is not None and not text.strip().isdigit() else ()
        except LexError:
            parts = ()
        if not 1 <= len(parts) <= 3:
            r.flags.add("dynamic_sql")
            r.labels |= catalog.all_labels
            return
        table = ".".join((DEFAULT_SCHEMA, *parts)[-2:])
        r.reads.add(table)
        # An unqualified name may be any schema's table (`"$user"` comes first).
        for candidate in {table} | (catalog.schemas_of(parts[0]) if len(parts) == 1 else set()):
            for col, labels in catalog.columns(candidate).items():
                r.columns.add(f"{candidate}.{col}")
                r.labels |= labels
    elif name in WHOLE_DATABASE_FUNCTIONS:
        r.opaque = True
        r.labels |= catalog.all_labels
    elif name in CURSOR_FUNCTIONS or call.schema == "cron":
        # An open cursor's rows, or SQL text pg_cron runs later as someone else.
        r.opaque = True
        r.flags.add("dynamic_sql")


def _routine(call: _Call, catalog: Catalog, r: _Reach) -> None:
    """User code: a volatile function outside the system schemas may write (issue 18);
    one the catalog does not know may be anything."""
    schema = call.schema if call.schema not in (None, "?") else None
    candidates = catalog.candidates(call.name, schema)
    user = [c for c in candidates if c.schema not in SYSTEM_SCHEMAS]
    if any(c.volatility == "v" for c in user):
        r.exec("volatile_function")
    if call.name in WRITING_FUNCTIONS and call.schema in (None, "pg_catalog"):
        r.exec("writing_function")
    if any(c.security_definer for c in candidates):
        r.flags.add("security_definer")
    if any(c.language not in COMPILED_LANGUAGES for c in user):
        # User-written SQL or PL code may read any table: what it returns cannot be
        # attributed to the statement's own columns.
        r.opaque = True
        r.labels |= catalog.all_labels
        r.flags.add("user_function")
    builtin = call.name in BUILTIN_FUNCTIONS and call.schema in (None, *SYSTEM_SCHEMAS)
    if call.known or candidates or builtin:
        return
    # Not a function of PostgreSQL 15, not one the database had at the last refresh (or
    # the database's functions were never loaded): it may be anything.
    r.exec("unknown_function")
    r.opaque = True
    r.labels |= catalog.all_labels


def _outputs(select: exp.Expression, scope: _Scope) -> tuple[frozenset[str], ...] | None:
    if isinstance(select, (exp.SetOperation, exp.Values)):
        return None  # positions come from several branches or rows: not attributed
    projections = select.expressions if isinstance(select, exp.Select) else []
    if not projections and isinstance(select, (exp.Insert, exp.Update, exp.Delete)):
        returning = select.args.get("returning")
        if returning is not None and not isinstance(select, exp.Delete):
            # RETURNING shows what was just written, from wherever it was read.
            return None
        projections = returning.expressions if returning is not None else []
    out = []
    for p in projections:
        if isinstance(p, exp.Star) or (isinstance(p, exp.Column) and isinstance(p.this, exp.Star)):
            return None
        out.append(frozenset(_labels_of(p, scope)[1]))
    return tuple(out)


def _command(text: str, tree: exp.Command) -> SqlStatement:
    word = str(tree.this).upper()
    rest = (
        tree.expression.name
        if isinstance(tree.expression, exp.Literal)
        else (str(tree.expression) if tree.expression is not None else "")
    )
    if word == "DO":
        return SqlStatement(text, "do", Operation.ADMIN, flags=frozenset({"do_block"}))
    if word == "EXECUTE":
        return SqlStatement(
            text,
            "execute",
            Operation.READ,
            flags=frozenset({"sql_execute"}),
            name=fold(rest.split("(")[0].strip()),
        )
    if word == "DEALLOCATE":
        return SqlStatement(text, "deallocate", Operation.READ)
    if word == "LOAD":
        # Loads a shared library from the database host's file system into the session.
        return SqlStatement(text, "load", Operation.ADMIN, flags=frozenset({"load_library"}))
    if word in ("CALL",):
        return SqlStatement(text, "call", Operation.EXEC, flags=frozenset({"procedure_call"}))
    if word in _ADMIN_COMMANDS or word.split()[0] in _ADMIN_COMMANDS:
        return SqlStatement(text, word.lower(), Operation.ADMIN)
    return SqlStatement(text, "unparsed", Operation.ADMIN, flags=frozenset({"unparsed"}))


def _session(text: str, s: SessionStatement) -> SqlStatement:
    op = Operation.READ
    if s.writes:
        op = Operation.WRITE
    elif s.sensitive:
        op = Operation.ADMIN
    if s.kind == "transaction":
        # READ WRITE is a write (read_only forbids it); other postures may open one.
        flags = {"unparsed"} if s.unreadable else set()
        if s.unreadable:
            op = Operation.ADMIN
    else:
        flags = {"sensitive_setting"} if s.sensitive else set()
    return SqlStatement(
        text, s.kind, op, settings=s.settings, flags=frozenset(flags), output_labels=()
    )


def _copy_target(words: list[Token]) -> tuple[bool, bool, bool] | None:
    """(from, program, file) of a COPY statement, read from its tokens: the first TO or
    FROM outside parentheses is the direction, then comes STDIN/STDOUT, or [PROGRAM] and
    a server-side file name in any string spelling. None when there is no TO/FROM."""
    depth = 0
    for i, t in enumerate(words):
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            depth -= 1
        elif depth == 0 and t.kind == "word" and t.text.lower() in ("to", "from"):
            is_from = t.text.lower() == "from"
            rest = [w.text.lower() if w.kind == "word" else w.text for w in words[i + 1 : i + 3]]
            if rest[:1] == ["program"]:
                return is_from, True, False
            return is_from, False, rest[:1] not in (["stdin"], ["stdout"])
    return None


def _copy(
    text: str, tree: exp.Copy, catalog: Catalog, words: list[Token], depth: int
) -> SqlStatement:
    scope = _Scope(list(tree.walk()), catalog)
    target_words = _copy_target(words)
    if target_words is None:
        return SqlStatement(text, "unparsed", Operation.ADMIN, flags=frozenset({"unparsed"}))
    is_from, program, file = target_words
    target = tree.this
    flags = {"copy"}
    if program:
        flags.add("copy_program")
    if file:
        flags.add("copy_file")
    if isinstance(target, exp.Schema):
        table = _table_name(target.this)
        cols = [_ident(c) for c in target.expressions]
        outputs: tuple[frozenset[str], ...] | None = tuple(catalog.column(table, c) for c in cols)
    elif isinstance(target, exp.Table):
        table, cols, outputs = _table_name(target), [], None
    else:
        body = target.this if isinstance(target, exp.Subquery) else target
        inner = _statement(body.sql(dialect="postgres"), body, catalog, [], depth)
        return SqlStatement(
            text,
            "copy",
            Operation.ADMIN if program or file else inner.operation,
            reads=inner.reads,
            writes=inner.writes,
            columns=inner.columns,
            functions=inner.functions,
            flags=frozenset(flags) | inner.flags,
            labels=inner.labels,
            output_labels=inner.output_labels,
        )
    labelled = scope.labelled([table])
    read_cols = {f"{table}.{c}" for c in cols} or set(labelled)
    labels = frozenset().union(*(catalog.column(table, c.rsplit(".", 1)[1]) for c in read_cols))
    op = Operation.WRITE if is_from else Operation.READ
    if program or file:
        op = Operation.ADMIN
    return SqlStatement(
        text,
        "copy",
        op,
        reads=frozenset() if is_from else frozenset({table}),
        writes=frozenset({table}) if is_from else frozenset(),
        columns=frozenset(read_cols),
        flags=frozenset(flags),
        labels=frozenset() if is_from else labels,
        output_labels=None if is_from else outputs,
    )


def _relations(scope: _Scope, catalog: Catalog, r: _Reach) -> None:
    """Catalog relations that hold column values or read the host's files."""
    for table in scope.tables:
        schema, name = table.split(".", 1)
        if schema not in (DEFAULT_SCHEMA, "pg_catalog"):
            continue
        if name in VALUE_RELATIONS:
            r.opaque = True
            r.labels |= catalog.all_labels
        if name in FILE_RELATIONS:
            r.flags.add("risky_function")


def _statement(
    text: str, tree: exp.Expression, catalog: Catalog, words: list[Token], depth: int
) -> SqlStatement:
    if isinstance(tree, exp.Command):
        return _command(text, tree)
    if isinstance(tree, exp.Copy):
        return _copy(text, tree, catalog, words, depth)
    nodes = list(tree.walk())
    scope = _Scope(nodes, catalog)
    scope.add_derived(nodes)
    calls = _calls(nodes)
    functions = {c.name for c in calls if c.node is not None}
    reach = _reach(calls, catalog, depth)
    _relations(scope, catalog, reach)
    flags = set(reach.flags)
    if any(isinstance(n, exp.ExecuteAsProperty) for n in nodes):
        # sqlglot's reading of `CREATE TABLE / MATERIALIZED VIEW ... AS EXECUTE name`:
        # it runs a prepared statement whose text is not here, as EXECUTE does.
        flags.add("sql_execute")
    writes: set[str] = set(reach.writes)
    for node_type in (exp.Insert, exp.Update, exp.Delete, exp.Merge):
        for node in _of(nodes, node_type):
            target = node.this
            if isinstance(target, exp.Schema):
                target = target.this
            if isinstance(target, exp.Table):
                writes.add(_table_name(target))
            if node is not tree:
                flags.add("dml_in_cte")
    cols, labels = _labels_of(tree, scope, nodes)
    kind = type(tree).__name__.lower()
    into = tree.args.get("into") if isinstance(tree, exp.Select) else None
    if isinstance(tree, (exp.Create, exp.Drop, exp.Alter, exp.TruncateTable)):
        op = Operation.DDL
        for t in _of(nodes, exp.Table):
            writes.add(_table_name(t))
    elif into is not None:
        # SELECT ... INTO t creates the table t.
        op, kind = Operation.DDL, "select_into"
        writes |= {_table_name(t) for t in into.find_all(exp.Table)} or {"?"}
    elif isinstance(tree, (exp.Grant, exp.Revoke)) or kind in ("grant", "revoke"):
        op = Operation.ADMIN
    elif isinstance(tree, (exp.Transaction, exp.Commit, exp.Rollback)):
        op, kind = Operation.READ, "transaction"
    elif writes:
        op = Operation.WRITE
    elif isinstance(tree, (exp.Select, exp.SetOperation, exp.Values)):
        op = Operation.READ
    else:
        op, kind = Operation.ADMIN, "unparsed"
        flags.add("unparsed")
    op = max(op, reach.operation, key=_severity)
    if "sensitive_setting" in flags and _severity(op) < _severity(Operation.ADMIN):
        op = Operation.ADMIN
    outputs = (
        _outputs(tree, scope)
        if isinstance(
            tree, (exp.Select, exp.SetOperation, exp.Values, exp.Insert, exp.Update, exp.Delete)
        )
        else ()
    )
    if reach.opaque:
        outputs = None
    labels |= reach.labels
    if outputs is None and labels:
        flags.add("star_over_labelled")
    written = _written(tree, scope, nodes, frozenset(labels), op, bool(reach.writes))
    return SqlStatement(
        text,
        kind,
        op,
        reads=frozenset(scope.tables - writes)
        | frozenset(t for t in scope.tables if t in writes and isinstance(tree, exp.Select))
        | reach.reads,
        writes=frozenset(writes),
        columns=frozenset(cols | reach.columns),
        functions=frozenset(functions | reach.functions),
        settings=tuple(reach.settings),
        flags=frozenset(flags),
        labels=frozenset(labels),
        output_labels=outputs,
        written_labels=written,
    )


def _written(
    tree: exp.Expression,
    scope: _Scope,
    nodes: list[exp.Expr],
    labels: frozenset[str],
    op: Operation,
    writes_inside: bool,
) -> frozenset[str]:
    """Labels that may flow into stored values. Conservative: everything the statement
    reads, except for UPDATE (its SET values) and DELETE (nothing), where a predicate on a
    labelled column stores no labelled value."""
    if not labels:
        return frozenset()
    everything = (
        op is Operation.EXEC
        or writes_inside
        or any(isinstance(n, (exp.Insert, exp.Merge)) for n in nodes)
        or (isinstance(tree, exp.Create) and tree.args.get("expression") is not None)
        or (isinstance(tree, exp.Select) and tree.args.get("into") is not None)
    )
    if everything:
        return labels
    found: set[str] = set()
    for update in _of(nodes, exp.Update):
        for item in update.expressions:
            value = item.expression if isinstance(item, exp.EQ) else item
            if value is None:
                continue
            inner = list(value.walk())
            if any(isinstance(n, (exp.Func, exp.Subquery, exp.Select)) for n in inner):
                return labels  # calls and subqueries: lineage not followed here
            found |= _labels_of(value, scope, inner)[1]
    return frozenset(found)


def _unparsed(text: str, why: str) -> SqlClassification:
    return SqlClassification(
        (SqlStatement(text, "unparsed", Operation.ADMIN, flags=frozenset({"unparsed", why})),)
    )


_COPY_OPTIONS = re.compile(
    r"^(\s*copy\b.*?\b(?:stdin|stdout|'[^']*'|program\s+'[^']*'))\s*(?:with\s*)?"
    r"\(\s*(?:format|freeze|delimiter|null|header|quote|escape|force_quote|force_not_null|"
    r"force_null|encoding|default)\b(?:[^()]|\([^()]*\))*\)\s*$",
    re.I | re.S,
)


_COPY_BINARY = re.compile(r"^(\s*copy\s+)binary\s", re.I)


def _parsable(statement: str) -> str:
    """The statement as sqlglot can read it. sqlglot does not parse COPY's option list
    (`(FORMAT binary)`), which cannot change what COPY reads or writes, so it is cut, and
    it takes the old `COPY BINARY t` for a table named binary, so BINARY is cut too."""
    statement = _COPY_BINARY.sub(r"\1", statement, count=1)
    m = _COPY_OPTIONS.match(statement)
    return m.group(1) if m else statement


_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_DECLARE = re.compile(
    rf"^declare\s+({_IDENT})\s+(?:binary\s+)?(?:(?:no\s+)?scroll\s+)?cursor\s+"
    rf"(?:with(?:out)?\s+hold\s+)?for\s+(.+)$",
    re.I | re.S,
)
_PREPARE = re.compile(rf"^prepare\s+({_IDENT})\s*(?:\([^)]*\)\s*)?as\s+(.+)$", re.I | re.S)
_FETCH = re.compile(
    rf"^(?:fetch|move)\b(?:\s+(?:next|prior|first|last|all|forward|backward|absolute|"
    rf"relative|[+-]?\d+))*\s+(?:(?:from|in)\s+)?({_IDENT})$",
    re.I,
)
_CLOSE = re.compile(rf"^close\s+({_IDENT})$", re.I)
_SIMPLE_ARGS = re.compile(rf"^\w+(?:\s+(?:{_IDENT}|\*))?$", re.I)
_NOTIFY = re.compile(rf"^notify\s+{_IDENT}(?:\s*,\s*'(?:[^']|'')*')?$", re.I)


def _name(ident: str) -> str:
    """A PostgreSQL identifier as the server sees it (quoted: as is; else folded)."""
    if ident.startswith('"'):
        return ident[1:-1].replace('""', '"')
    return fold(ident)


def _wrapping(
    text: str, inner_sql: str, kind: str, flag: str, name: str, catalog: Catalog, depth: int
) -> SqlStatement:
    """DECLARE ... FOR q and PREPARE n AS q: classified as q, under their own kind."""
    inner = _classify(inner_sql, catalog, depth)
    if len(inner.statements) != 1 or inner.statements[0].kind == "unparsed":
        return SqlStatement(
            text, "unparsed", Operation.ADMIN, flags=frozenset({"unparsed", flag}), name=name
        )
    body = inner.statements[0]
    return replace(body, text=text, kind=kind, flags=body.flags | {flag}, name=name)


def _utility(
    text: str, plain: str, toks: list[Token], catalog: Catalog, depth: int
) -> SqlStatement | None:
    """Statements read from their tokens rather than by sqlglot (SET, transaction modes)
    or that sqlglot misreads (`CLOSE c` parses as a column alias); None for the rest."""
    session = session_statement(toks)
    if session is not None:
        return _session(text, session)
    m = _DECLARE.match(plain)
    if m:
        return _wrapping(text, m.group(2), "declare", "cursor", _name(m.group(1)), catalog, depth)
    m = _PREPARE.match(plain)
    if m:
        return _wrapping(
            text, m.group(2), "prepare", "sql_prepare", _name(m.group(1)), catalog, depth
        )
    m = _FETCH.match(plain)
    if m:
        return SqlStatement(
            text, "fetch", Operation.READ, flags=frozenset({"cursor"}), name=_name(m.group(1))
        )
    m = _CLOSE.match(plain)
    if m:
        return SqlStatement(
            text, "close", Operation.READ, flags=frozenset({"cursor"}), name=_name(m.group(1))
        )
    word = plain.split(None, 1)[0].lower() if plain.split() else ""
    if plain.lower().split() == ["discard", "all"]:
        # DISCARD ALL runs RESET ALL: it would undo the session's read-only wall.
        return _session(text, SessionStatement("discard", ("all",)))
    if word in ("listen", "unlisten", "discard") and _SIMPLE_ARGS.match(plain):
        return SqlStatement(text, word, Operation.READ)
    if word == "notify" and _NOTIFY.match(plain):
        return SqlStatement(text, "notify", Operation.WRITE)
    return None


def _piece(piece: str, catalog: Catalog, depth: int) -> SqlStatement | str:
    """One statement classified, or why it is unparsed."""
    text = piece.strip()
    try:
        plain, toks = normalised(text)
    except (LexError, SplitError):
        return "lexical"
    utility = _utility(text, plain.strip(), toks, catalog, depth)
    if utility is not None:
        return utility
    try:
        parsed = [
            t
            for t in sqlglot.parse(_parsable(plain), read="postgres")
            if isinstance(t, exp.Expression)
        ]
    except (SqlglotError, ValueError, RecursionError):
        return "parse_error"
    if len(parsed) != 1:
        # sqlglot sees more or fewer statements than PostgreSQL would.
        return "ambiguous_boundaries"
    words = [t for t in toks if t.kind not in ("space", "comment")]
    return _lexical(_statement(text, parsed[0], catalog, words, depth), words, catalog)


def _lexical(statement: SqlStatement, words: list[Token], catalog: Catalog) -> SqlStatement:
    """What the lexer sees called, for every statement: the parse may hide a call (in
    CALL's arguments, COPY's WHERE) or give it another name (a function sqlglot knows
    under its own name may be a user's volatile function of the same name)."""
    names = _lexical_calls(words)
    r = _Reach()
    for name in names:
        _routine(_Call(name, None, True), catalog, r)
    if any(risky(n, families=False) for n in names):
        r.flags.add("risky_function")
    if names & _SQL_RUNNERS and statement.kind in ("call", "copy"):
        r.flags.add("dynamic_sql")  # SQL text where the classifier does not read arguments
    _unseen_tables(statement, words, catalog, r)
    if r.flags <= statement.flags and r.labels <= statement.labels and not r.opaque:
        return statement
    return replace(
        statement,
        operation=max(statement.operation, r.operation, key=_severity),
        flags=statement.flags | r.flags,
        labels=statement.labels | r.labels,
        output_labels=None if r.opaque else statement.output_labels,
    )


def _unseen_tables(
    statement: SqlStatement, words: list[Token], catalog: Catalog, r: _Reach
) -> None:
    """A safety net under the parser: a name of a labelled table anywhere in the text
    that the parse did not count as read or written (a syntax sqlglot misreads) counts
    as reading that whole table, with output positions unknown."""
    seen = {t.split(".", 1)[-1].lower() for t in statement.reads | statement.writes}
    for t in words:
        if t.kind not in ("word", "ident"):
            continue
        name = fold(t.text) if t.kind == "word" else t.text[1:-1].replace('""', '"')
        if name.lower() in seen:
            continue
        for table in catalog.schemas_of(name):
            for labels in catalog.columns(table).values():
                r.labels |= labels
            r.opaque = True


def _classify(sql: str, catalog: Catalog, depth: int = 0) -> SqlClassification:
    try:
        pieces = split(sql)
    except SplitError:
        return _unparsed(sql, "unterminated")
    out: list[SqlStatement] = []
    for piece in pieces:
        try:
            result = _piece(piece, catalog, depth)
        except (SqlglotError, AttributeError, TypeError, ValueError, IndexError):
            result = "classifier_error"
        if isinstance(result, str):
            return _unparsed(sql, result)
        out.append(result)
    return SqlClassification(tuple(out))


class SqlClassifier:
    """Classifies SQL text against a catalog, caching results by shape (bounded LRU).

    A cached classification is the one of the first text of its shape: equal to a fresh
    one of any text of that shape in everything but `SqlStatement.text`, which keeps that
    first text's integers (what the proxy reads from it, COPY's options, takes none;
    tests/classify/test_sql_cache.py). The cache belongs to one catalog: any other
    empties it."""

    def __init__(self, catalog: Catalog | None = None, cache_size: int = CACHE_SIZE) -> None:
        self._cache: OrderedDict[str, SqlClassification] = OrderedDict()
        self._catalog = catalog or Catalog()
        self._cache_size = cache_size

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @catalog.setter
    def catalog(self, catalog: Catalog) -> None:
        self.use_catalog(catalog)

    def use_catalog(self, catalog: Catalog) -> None:
        """Switch catalogs (labels discovered, functions loaded); cached results are
        dropped. (Setting `catalog` does the same.)"""
        self._catalog = catalog
        self._cache.clear()

    def classify(self, sql: str) -> SqlClassification:
        # Only integers are shaped away: a fraction or exponent can change what a statement
        # is (`FETCH 1.5` is no FETCH), so such text is its own key. The two kinds never
        # meet: a shape has a fraction or exponent only where its text did.
        key = sql if _FRACTIONAL.search(sql) else shape(sql)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        result = _classify(sql, self._catalog)
        self._cache[key] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result
