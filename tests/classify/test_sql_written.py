"""Which labels a statement may store (so a masked value cannot be laundered through a
write and read back unmasked)."""

from __future__ import annotations

import pytest

from interlock.classify.sql import Catalog, SqlClassifier

CATALOG = Catalog.from_config(
    {"public.payroll.name": ["pii"], "public.payroll.salary": ["financial"]}
)


@pytest.mark.parametrize(
    ("sql", "written"),
    [
        ("insert into orders (id, total) select id, length(name) from payroll", {"pii"}),
        ("insert into orders values (1, 2)", set()),
        ("update payroll set salary = salary + 1 where name = 'ann'", {"financial"}),
        ("update payroll set name = upper(name)", {"pii"}),
        ("update orders set total = p.salary from payroll p", {"financial"}),
        ("update orders set total = (select count(*) from payroll)", set()),
        ("update orders set total = (select max(salary) from payroll)", {"financial"}),
        ("delete from payroll where name = 'x' returning id", set()),
        ("create view leaky as select name from payroll", {"pii"}),
        ("create table t2 as select salary from payroll", {"financial"}),
        ("select name into c2 from payroll", {"pii"}),
        ("select pg_notify('c', name) from payroll", {"pii"}),
        ("with x as (insert into o select name from payroll returning 1) select 1", {"pii"}),
        ("select name from payroll", set()),
        (
            "merge into orders o using payroll p on o.id = p.id when matched then"
            " update set total = length(p.name)",
            {"pii"},
        ),
    ],
)
def test_labels_that_may_be_stored(sql: str, written: set[str]) -> None:
    (statement,) = SqlClassifier(CATALOG).classify(sql).statements
    assert set(statement.written_labels) == written
