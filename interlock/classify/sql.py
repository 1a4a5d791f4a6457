"""Classifying SQL statements for the PDP: what they do, to which data, and how.

Every statement gets an operation from the model's vocabulary, the tables it reads and
writes, the columns it reads, every function it calls, the settings it changes, flags for
constructs that deserve the policy's attention (DML inside a CTE, `DO`, `COPY ... PROGRAM`,
`set_config`, SQL-level `EXECUTE`, a star over labelled data), the data labels it touches
and, for each output column, the labels that flow into it (for masking).

Resolution is deliberately conservative: an unqualified column counts as every labelled
column of that name in the statement's tables, `*` counts as every labelled column of the
tables it covers, and a bare table alias used as a value (`row_to_json(p)`) counts as the
whole row. Anything sqlglot cannot parse, or where its statement boundaries differ from
PostgreSQL's (see `sqlsplit`), is one statement of kind `unparsed`, which the bundled
policy denies.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from interlock.classify.sqlsplit import SplitError, shape, split
from interlock.core.model import Operation

DEFAULT_SCHEMA = "public"
SENSITIVE_SETTINGS = frozenset(
    {
        "role",
        "session_authorization",
        "default_transaction_read_only",
        "transaction_read_only",
        "standard_conforming_strings",
        "search_path",
        "session_replication_role",
        "row_security",
        "client_encoding",
        "default_transaction_isolation",
        "lo_compat_privileges",
        "allow_system_table_mods",
    }
)
"""Settings that change who the session is, what it may do, or how SQL text is read."""
RISKY_FUNCTIONS = frozenset(
    {
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "pg_file_write",
        "lo_import",
        "lo_export",
        "lo_from_bytea",
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "set_config",
        "pg_sleep",
        "query_to_xml",
        "pg_execute_server_program",
    }
)
"""Functions that reach the file system, other servers or other sessions."""
CACHE_SIZE = 4096
_ADMIN_COMMANDS = frozenset(
    {
        "VACUUM",
        "ANALYZE",
        "CLUSTER",
        "REINDEX",
        "CHECKPOINT",
        "LOAD",
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

    schema: str
    name: str
    volatility: str
    security_definer: bool
    language: str
    kind: str


@dataclass(frozen=True, slots=True)
class Catalog:
    """Column labels: "schema.table.column" -> labels (lower case, unquoted names)."""

    labels: Mapping[str, frozenset[str]] = field(default_factory=dict)
    routines: Mapping[str, tuple[Routine, ...]] = field(default_factory=dict)
    routines_known: bool = False

    @classmethod
    def from_config(cls, mapping: Mapping[str, Iterable[str]]) -> Catalog:
        return cls({k.lower(): frozenset(v) for k, v in mapping.items()})

    def columns(self, table: str) -> dict[str, frozenset[str]]:
        prefix = table + "."
        return {k[len(prefix) :]: v for k, v in self.labels.items() if k.startswith(prefix)}


@dataclass(frozen=True, slots=True)
class SqlStatement:
    text: str
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
    """Labels per output column, or None when the positions are not known (a star)."""
    name: str | None = None
    """The prepared-statement name of SQL-level PREPARE / EXECUTE / DEALLOCATE."""


@dataclass(frozen=True, slots=True)
class SqlClassification:
    statements: tuple[SqlStatement, ...]

    @property
    def operation(self) -> Operation:
        return max((s.operation for s in self.statements), key=_severity, default=Operation.READ)

    @property
    def labels(self) -> frozenset[str]:
        return frozenset().union(*(s.labels for s in self.statements))

    @property
    def flags(self) -> frozenset[str]:
        return frozenset().union(*(s.flags for s in self.statements))

    def details(self) -> dict[str, object]:
        """Compact features for the policy input (docs/postgres.md)."""
        s = self.statements
        return {
            "statements": [st.kind for st in s],
            "reads": sorted(frozenset().union(*(x.reads for x in s))),
            "writes": sorted(frozenset().union(*(x.writes for x in s))),
            "columns": sorted(frozenset().union(*(x.columns for x in s)))[:64],
            "functions": sorted(frozenset().union(*(x.functions for x in s))),
            "settings": sorted({v for x in s for v in x.settings}),
            "flags": sorted(self.flags),
        }


_ORDER = [Operation.READ, Operation.WRITE, Operation.EXEC, Operation.DDL, Operation.ADMIN]


def _severity(op: Operation) -> int:
    return _ORDER.index(op) if op in _ORDER else len(_ORDER)


def _ident(node: exp.Expression | None) -> str:
    if node is None:
        return ""
    if isinstance(node, exp.Identifier):
        name = str(node.this)
        return name if node.quoted else name.lower()
    return str(node.name).lower()


def _table_name(t: exp.Table) -> str:
    schema = _ident(t.args.get("db")) or DEFAULT_SCHEMA
    return f"{schema}.{_ident(t.this)}"


class _Scope:
    """Tables of one statement, by alias and by name."""

    def __init__(self, tree: exp.Expression, catalog: Catalog) -> None:
        self.catalog = catalog
        ctes = {
            _ident(c.args["alias"].this)
            for c in tree.find_all(exp.CTE)
            if c.args.get("alias") is not None
        }
        self.aliases: dict[str, str] = {}
        self.tables: set[str] = set()
        self.derived: dict[str, frozenset[str]] = {}
        """Subquery and CTE names -> every label their bodies touch (conservative)."""
        for t in tree.find_all(exp.Table):
            if not isinstance(t.this, exp.Identifier):
                continue
            name = _table_name(t)
            if _ident(t.this) in ctes and not t.args.get("db"):
                continue
            self.tables.add(name)
            alias = t.args.get("alias")
            self.aliases[_ident(alias.this) if alias is not None else _ident(t.this)] = name
            self.aliases.setdefault(_ident(t.this), name)

    def add_derived(self, tree: exp.Expression) -> None:
        sources: list[tuple[str, exp.Expression]] = []
        for cte in tree.find_all(exp.CTE):
            alias = cte.args.get("alias")
            if alias is not None:
                sources.append((_ident(alias.this), cte.this))
        for sub in tree.find_all(exp.Subquery):
            alias = sub.args.get("alias")
            if alias is not None:
                sources.append((_ident(alias.this), sub.this))
        for name, body in sources:
            labels: set[str] = set()
            for c in body.find_all(exp.Column):
                for lab in self.resolve(c).values():
                    labels |= lab
            if any(not isinstance(x.parent, exp.Count) for x in body.find_all(exp.Star)):
                for lab in self.labelled(self.tables).values():
                    labels |= lab
            self.derived[name] = frozenset(labels) | self.derived.get(name, frozenset())

    def labelled(self, tables: Iterable[str]) -> dict[str, frozenset[str]]:
        out: dict[str, frozenset[str]] = {}
        for table in tables:
            for col, labels in self.catalog.columns(table).items():
                out[f"{table}.{col}"] = labels
        return out

    def resolve(self, col: exp.Column) -> dict[str, frozenset[str]]:
        """Qualified column -> labels for one column reference (conservatively)."""
        qualifier = _ident(col.args.get("table"))
        if qualifier in self.derived and qualifier not in self.aliases:
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
            return {f"{table}.{name}": self.catalog.labels.get(f"{table}.{name}", frozenset())}
        if self.derived:
            derived = frozenset().union(*self.derived.values())
            found = {
                f"{t}.{name}": self.catalog.labels.get(f"{t}.{name}", frozenset())
                for t in self.tables
            }
            found[f"(derived).{name}"] = derived
            return found
        if name in self.aliases and not any(
            f"{t}.{name}" in self.catalog.labels for t in self.tables
        ):
            return self.labelled([self.aliases[name]])
        found = {
            f"{t}.{name}": self.catalog.labels.get(f"{t}.{name}", frozenset()) for t in self.tables
        }
        return found or {name: frozenset()}


def _labels_of(node: exp.Expression, scope: _Scope) -> tuple[set[str], set[str]]:
    cols: set[str] = set()
    labels: set[str] = set()
    for c in node.find_all(exp.Column):
        for qualified, lab in scope.resolve(c).items():
            cols.add(qualified)
            labels |= lab
    for star in node.find_all(exp.Star):
        # count(*) counts rows; it reads no column values.
        if not isinstance(star.parent, (exp.Column, exp.Count)):
            for qualified, lab in scope.labelled(scope.tables).items():
                cols.add(qualified)
                labels |= lab
    return cols, labels


def _functions(tree: exp.Expression) -> set[str]:
    out = set()
    for f in tree.find_all(exp.Func):
        if isinstance(f, exp.Anonymous):
            out.add(str(f.name).lower())
            continue
        out.add(f.sql_name().lower())
        # The name PostgreSQL itself sees, e.g. generate_series for sqlglot's
        # ExplodingGenerateSeries.
        out.add(f.sql(dialect="postgres").split("(", 1)[0].strip().lower())
    return out


def _outputs(select: exp.Expression, scope: _Scope) -> tuple[frozenset[str], ...] | None:
    projections = select.expressions if isinstance(select, exp.Select) else []
    if not projections and isinstance(select, (exp.Insert, exp.Update, exp.Delete)):
        returning = select.args.get("returning")
        projections = returning.expressions if returning is not None else []
    out = []
    for p in projections:
        if isinstance(p, exp.Star) or (isinstance(p, exp.Column) and isinstance(p.this, exp.Star)):
            return None
        out.append(frozenset(_labels_of(p, scope)[1]))
    return tuple(out)


_SET_NAME = re.compile(r"^\s*(?:session\s+|local\s+)?([A-Za-z_][\w.]*)", re.I)


def _command(text: str, tree: exp.Command) -> SqlStatement:
    word = str(tree.this).upper()
    rest = (
        tree.expression.name
        if isinstance(tree.expression, exp.Literal)
        else (str(tree.expression) if tree.expression is not None else "")
    )
    if word in ("SET", "RESET"):
        m = _SET_NAME.match(rest)
        setting = (m.group(1).lower() if m else rest.strip().lower()) or "all"
        if setting in ("session", "authorization") and "authorization" in rest.lower():
            setting = "session_authorization"
        sensitive = setting in SENSITIVE_SETTINGS or setting == "all"
        return SqlStatement(
            text,
            word.lower(),
            Operation.ADMIN if sensitive else Operation.READ,
            settings=(setting,),
            flags=frozenset({"sensitive_setting"} if sensitive else ()),
        )
    if word == "DO":
        return SqlStatement(text, "do", Operation.ADMIN, flags=frozenset({"do_block"}))
    if word == "EXECUTE":
        return SqlStatement(
            text,
            "execute",
            Operation.READ,
            flags=frozenset({"sql_execute"}),
            name=rest.split("(")[0].strip().lower(),
        )
    if word == "DEALLOCATE":
        return SqlStatement(text, "deallocate", Operation.READ)
    if word in ("CALL",):
        return SqlStatement(text, "call", Operation.EXEC, flags=frozenset({"procedure_call"}))
    if word in _ADMIN_COMMANDS or word.split()[0] in _ADMIN_COMMANDS:
        return SqlStatement(text, word.lower(), Operation.ADMIN)
    return SqlStatement(text, "unparsed", Operation.ADMIN, flags=frozenset({"unparsed"}))


def _set(text: str, tree: exp.Set) -> SqlStatement:
    names = []
    for item in tree.expressions:
        target = item.this
        if isinstance(target, (exp.EQ, exp.PropertyEQ)):
            target = target.this
        names.append(
            _ident(target)
            if isinstance(target, (exp.Column, exp.Identifier))
            else target.sql().lower()
            if target is not None
            else "?"
        )
    names = [
        "session_authorization" if n in ("authorization", "session authorization") else n
        for n in names
    ]
    sensitive = any(n in SENSITIVE_SETTINGS or n == "?" for n in names)
    return SqlStatement(
        text,
        "set",
        Operation.ADMIN if sensitive else Operation.READ,
        settings=tuple(names),
        flags=frozenset({"sensitive_setting"} if sensitive else ()),
    )


def _copy(text: str, tree: exp.Copy, catalog: Catalog) -> SqlStatement:
    scope = _Scope(tree, catalog)
    program = (
        any(
            isinstance(f, exp.Identifier) and f.this.upper() == "PROGRAM"
            for f in tree.args.get("files") or []
        )
        or re.search(r"\bPROGRAM\b", text, re.I) is not None
    )
    is_from = bool(tree.args.get("kind"))
    target = tree.this
    flags = {"copy"}
    if program:
        flags.add("copy_program")
    if isinstance(target, exp.Schema):
        table = _table_name(target.this)
        cols = [_ident(c) for c in target.expressions]
        outputs: tuple[frozenset[str], ...] | None = tuple(
            catalog.labels.get(f"{table}.{c}", frozenset()) for c in cols
        )
    elif isinstance(target, exp.Table):
        table, cols, outputs = _table_name(target), [], None
    else:
        body = target.this if isinstance(target, exp.Subquery) else target
        inner = _statement(body.sql(dialect="postgres"), body, catalog)
        return SqlStatement(
            text,
            "copy",
            Operation.ADMIN if program else Operation.READ,
            reads=inner.reads,
            columns=inner.columns,
            functions=inner.functions,
            flags=frozenset(flags) | inner.flags,
            labels=inner.labels,
            output_labels=inner.output_labels,
        )
    labelled = scope.labelled([table])
    read_cols = {f"{table}.{c}" for c in cols} or set(labelled)
    labels = frozenset().union(*(catalog.labels.get(c, frozenset()) for c in read_cols))
    op = Operation.ADMIN if program else (Operation.WRITE if is_from else Operation.READ)
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


def _statement(text: str, tree: exp.Expression, catalog: Catalog) -> SqlStatement:
    if isinstance(tree, exp.Command):
        return _command(text, tree)
    if isinstance(tree, exp.Copy):
        return _copy(text, tree, catalog)
    if isinstance(tree, exp.Set):
        return _set(text, tree)
    scope = _Scope(tree, catalog)
    scope.add_derived(tree)
    functions = _functions(tree)
    flags: set[str] = set()
    if functions & RISKY_FUNCTIONS:
        flags.add("risky_function")
    settings: list[str] = []
    for f in tree.find_all(exp.Anonymous):
        if f.name.lower() == "set_config" and f.expressions:
            setting = f.expressions[0]
            name = setting.name.lower() if isinstance(setting, exp.Literal) else "?"
            settings.append(name)
            flags.add("set_config")
            if name in SENSITIVE_SETTINGS or name == "?":
                flags.add("sensitive_setting")
    writes: set[str] = set()
    for node_type in (exp.Insert, exp.Update, exp.Delete, exp.Merge):
        for node in tree.find_all(node_type):
            target = node.this
            if isinstance(target, exp.Schema):
                target = target.this
            if isinstance(target, exp.Table):
                writes.add(_table_name(target))
            if node is not tree:
                flags.add("dml_in_cte")
    cols, labels = _labels_of(tree, scope)
    kind = type(tree).__name__.lower()
    if isinstance(tree, (exp.Create, exp.Drop, exp.Alter, exp.TruncateTable)):
        op = Operation.DDL
        for t in tree.find_all(exp.Table):
            writes.add(_table_name(t))
    elif isinstance(tree, (exp.Grant, exp.Revoke)) or kind in ("grant", "revoke"):
        op = Operation.ADMIN
    elif isinstance(tree, (exp.Transaction, exp.Commit, exp.Rollback)):
        op, kind = Operation.READ, "transaction"
    elif writes:
        op = Operation.WRITE
    elif isinstance(tree, (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Values)):
        op = Operation.READ
    else:
        op, kind = Operation.ADMIN, "unparsed"
        flags.add("unparsed")
    if "sensitive_setting" in flags and op is Operation.READ:
        op = Operation.ADMIN
    outputs = (
        _outputs(tree, scope)
        if isinstance(tree, (exp.Select, exp.Insert, exp.Update, exp.Delete))
        else ()
    )
    if outputs is None and labels:
        flags.add("star_over_labelled")
    return SqlStatement(
        text,
        kind,
        op,
        reads=frozenset(scope.tables - writes)
        | frozenset(t for t in scope.tables if t in writes and isinstance(tree, exp.Select)),
        writes=frozenset(writes),
        columns=frozenset(cols),
        functions=frozenset(functions),
        settings=tuple(settings),
        flags=frozenset(flags),
        labels=frozenset(labels),
        output_labels=outputs,
    )


def _unparsed(text: str, why: str) -> SqlClassification:
    return SqlClassification(
        (SqlStatement(text, "unparsed", Operation.ADMIN, flags=frozenset({"unparsed", why})),)
    )


_COPY_OPTIONS = re.compile(
    r"^(\s*copy\b.*?\b(?:stdin|stdout|'[^']*'|program\s+'[^']*'))\s*(?:with\s*)?"
    r"\(\s*(?:format|freeze|delimiter|null|header|quote|escape|force_quote|force_not_null|"
    r"force_null|encoding|default)\b[^)]*\)\s*$",
    re.I | re.S,
)


def _parsable(statement: str) -> str:
    """The statement as sqlglot can read it. sqlglot does not parse COPY's option list
    (`(FORMAT binary)`), which cannot change what COPY reads or writes, so it is cut."""
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
    """A PostgreSQL identifier as the server sees it (quoted: as is; else lower case)."""
    if ident.startswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident.lower()


class SqlClassifier:
    """Classifies SQL text against a catalog, caching results by text (bounded LRU)."""

    def __init__(self, catalog: Catalog | None = None, cache_size: int = CACHE_SIZE) -> None:
        self.catalog = catalog or Catalog()
        self._cache: OrderedDict[str, SqlClassification] = OrderedDict()
        self._cache_size = cache_size

    def use_catalog(self, catalog: Catalog) -> None:
        """Switch catalogs (labels discovered, reloaded); cached results are dropped."""
        self.catalog = catalog
        self._cache.clear()

    def classify(self, sql: str) -> SqlClassification:
        key = shape(sql)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        result = self._classify(sql)
        self._cache[key] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    def _wrapping(self, text: str, inner_sql: str, kind: str, flag: str, name: str) -> SqlStatement:
        """DECLARE ... FOR q and PREPARE n AS q: classified as q, under their own kind."""
        inner = self.classify(inner_sql)
        if len(inner.statements) != 1 or inner.statements[0].kind == "unparsed":
            return SqlStatement(
                text, "unparsed", Operation.ADMIN, flags=frozenset({"unparsed", flag}), name=name
            )
        body = inner.statements[0]
        return replace(body, text=text, kind=kind, flags=body.flags | {flag}, name=name)

    def _utility(self, text: str) -> SqlStatement | None:
        """Utility statements sqlglot misreads (`CLOSE c` parses as a column alias), by
        their leading keywords; None for everything else."""
        m = _DECLARE.match(text)
        if m:
            return self._wrapping(text, m.group(2), "declare", "cursor", _name(m.group(1)))
        m = _PREPARE.match(text)
        if m:
            return self._wrapping(text, m.group(2), "prepare", "sql_prepare", _name(m.group(1)))
        m = _FETCH.match(text)
        if m:
            return SqlStatement(
                text, "fetch", Operation.READ, flags=frozenset({"cursor"}), name=_name(m.group(1))
            )
        m = _CLOSE.match(text)
        if m:
            return SqlStatement(
                text, "close", Operation.READ, flags=frozenset({"cursor"}), name=_name(m.group(1))
            )
        word = text.split(None, 1)[0].lower() if text.split() else ""
        if word in ("listen", "unlisten", "discard") and _SIMPLE_ARGS.match(text):
            return SqlStatement(text, word, Operation.READ)
        if word == "notify" and _NOTIFY.match(text):
            return SqlStatement(text, "notify", Operation.WRITE)
        return None

    def _classify(self, sql: str) -> SqlClassification:
        try:
            pieces = split(sql)
        except SplitError:
            return _unparsed(sql, "unterminated")
        if not pieces:
            return SqlClassification(())
        trees: list[exp.Expression | SqlStatement] = []
        for piece in pieces:
            utility = self._utility(piece.strip())
            if utility is not None:
                trees.append(utility)
                continue
            try:
                parsed = [
                    t
                    for t in sqlglot.parse(_parsable(piece), read="postgres")
                    if isinstance(t, exp.Expression)
                ]
            except (SqlglotError, ValueError, RecursionError):
                return _unparsed(sql, "parse_error")
            if len(parsed) != 1:
                # sqlglot sees more or fewer statements than PostgreSQL would.
                return _unparsed(sql, "ambiguous_boundaries")
            trees.append(parsed[0])
        try:
            return SqlClassification(
                tuple(
                    tree
                    if isinstance(tree, SqlStatement)
                    else _statement(text.strip(), tree, self.catalog)
                    for text, tree in zip(pieces, trees, strict=True)
                )
            )
        except (SqlglotError, AttributeError, TypeError, ValueError):
            return _unparsed(sql, "classifier_error")
