"""SQL injection in MySQL/PostgreSQL query text: the shapes injection leaves, and ordinary queries left alone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.inspect.sqli import Dialect, check_sql

ATTACKS: list[tuple[str, Dialect, str, str]] = [
    ("or-1-1", "mysql", "SELECT * FROM users WHERE id = 1 OR 1=1", "tautology"),
    ("or-a-a", "mysql", "SELECT * FROM users WHERE name = '' OR 'a'='a'", "tautology"),
    ("or-true", "postgresql", "SELECT * FROM users WHERE id = 1 OR TRUE", "tautology"),
    ("or-pipes", "mysql", "SELECT * FROM users WHERE id = 1 || 1=1", "tautology"),
    ("or-2-gt-1", "mysql", "SELECT * FROM users WHERE id = 7 OR 2>1", "tautology"),
    ("comment-rest", "mysql", "SELECT * FROM users WHERE name = 'admin' -- ' AND password = 'x'", "comment"),
    ("hash-rest", "mysql", "SELECT * FROM users WHERE name = 'admin'#' AND password = 'x'", "comment"),
    ("glued-comments", "mysql", "SELECT/**/password/**/FROM/**/users", "comment"),
    ("open-comment", "mysql", "SELECT * FROM users WHERE id = 1 /* AND tenant = 4", "comment"),
    ("stacked-drop", "mysql", "SELECT * FROM users WHERE id = 1; DROP TABLE users", "stacked"),
    ("stacked-insert", "postgresql", "SELECT 1; INSERT INTO admins VALUES ('eve')", "stacked"),
    ("insert-then-drop", "mysql", "INSERT INTO c (body) VALUES ('x'); DROP TABLE c; -- ')", "stacked"),
    ("union-nulls", "mysql", "SELECT name FROM p WHERE id = -1 UNION SELECT NULL, NULL, NULL", "union"),
    ("union-schema", "mysql", "SELECT a FROM p WHERE id = -1 UNION ALL SELECT table_name, 2 "
     "FROM information_schema.tables", "union"),
    ("union-version", "mysql", "SELECT a FROM p WHERE id = -1 UNION SELECT @@version, user()", "union"),
    ("union-shadow", "postgresql", "SELECT a FROM t WHERE a = 'x' UNION SELECT usename, passwd FROM pg_shadow",
     "union"),
    ("union-constants", "mysql", "SELECT a, b FROM p WHERE id = 1 UNION SELECT 1, 'x'", "union"),
    ("versioned-comment", "mysql", "SELECT * FROM users WHERE id = 1 /*!50000UNION*/ SELECT NULL,NULL", "union"),
    ("sleep", "mysql", "SELECT * FROM products WHERE id = 1 AND SLEEP(5)", "time_delay"),
    ("benchmark", "mysql", "SELECT * FROM products WHERE id = 1 AND BENCHMARK(5000000, MD5(1))", "time_delay"),
    ("pg-sleep", "postgresql", "SELECT * FROM products WHERE id = 1 AND 1=(SELECT 1 FROM pg_sleep(10))", "time_delay"),
    ("waitfor", "mysql", "SELECT * FROM products WHERE id = 1 WAITFOR DELAY '0:0:5'", "time_delay"),
    ("broken-quote", "mysql", "SELECT * FROM users WHERE name = 'O'Brien'", "unbalanced_quote"),
    ("escaped-payload", "mysql", "SELECT * FROM users WHERE name = 'x'' OR ''1''=''1'", "libinjection"),
    ("backslash-payload", "mysql", "SELECT * FROM users WHERE name = 'x\\' OR 1=1 -- '", "libinjection"),
    ("pg-escaped-payload", "postgresql", "SELECT * FROM t WHERE n = 'Robert''); DROP TABLE students;--'",
     "libinjection"),
]  # fmt: skip


@pytest.mark.parametrize(("dialect", "sql", "kind"), [a[1:] for a in ATTACKS], ids=[a[0] for a in ATTACKS])
def test_injection_shapes_are_found(dialect: Dialect, sql: str, kind: str) -> None:
    """Each attack is reported with the shape it shows, at an offset inside the statement."""
    hits = check_sql(sql, dialect)
    assert kind in {h.kind for h in hits}
    assert all(0 <= h.offset < len(sql) for h in hits)


ORDINARY: list[tuple[str, Dialect, str]] = [
    ("where-and", "mysql", "SELECT * FROM users WHERE email = 'a@b.com' AND active = 1"),
    ("join-like-quote", "mysql", "SELECT u.id, u.name FROM users u LEFT JOIN orders o ON o.user_id = u.id "
     "WHERE u.name LIKE '%O''Brien%' ORDER BY u.id LIMIT 10"),
    ("insert-prose", "mysql",
     "INSERT INTO posts (title, body) VALUES ('Hello', 'It''s a nice day; isn''t it? -- yes')"),
    ("backslash-quote", "mysql", "INSERT INTO posts (title, body) VALUES ('Hello', 'It\\'s a \"quoted\" word')"),
    ("update", "mysql", "UPDATE accounts SET balance = balance - 10 WHERE id = 42"),
    ("where-1-1-builder", "mysql", "SELECT * FROM t WHERE 1=1 AND a = 2"),
    ("sqlcommenter", "mysql", "SELECT * FROM users WHERE id = 1 /*controller='users',action='show'*/"),
    ("leading-comment", "mysql", "SELECT /* app:web */ id FROM users WHERE id IN (1, 2, 3)"),
    ("migration-mysql", "mysql", "CREATE TABLE a (id int); INSERT INTO a VALUES (1); DROP TABLE b;"),
    ("migration-pg", "postgresql", "BEGIN; ALTER TABLE a ADD COLUMN b int; UPDATE a SET b = 0; COMMIT;"),
    ("plain-union", "mysql", "SELECT a FROM x UNION SELECT a FROM y WHERE y.k = 'v'"),
    ("interval", "mysql", "SELECT COUNT(*) FROM t WHERE created_at > NOW() - INTERVAL 1 DAY"),
    ("or-column", "mysql", "SELECT * FROM t WHERE status IN ('a','b') OR priority = 1"),
    ("or-two-columns", "mysql", "SELECT * FROM t WHERE a = 'x' OR b = 'x'"),
    ("pg-dump-set-config", "postgresql", "SELECT pg_catalog.set_config('search_path', '', false)"),
    ("version-call", "postgresql", "SELECT version()"),
    ("json-literal", "postgresql", "INSERT INTO t (data) VALUES ('{\"a\": \"b -- c\"}')"),
    ("dollar-quoted", "postgresql", "SELECT * FROM t WHERE body = $$it's O'Brien's$$"),
    ("stored-statement", "mysql", "SELECT * FROM audit WHERE q = 'SELECT * FROM users WHERE id = 1'"),
    ("set-names-first", "mysql", "SET NAMES utf8mb4; SELECT 1"),
    ("double-quoted-string", "mysql", "SELECT * FROM t WHERE name = \"O'Brien\""),
    ("quoted-identifiers", "postgresql",
     "SELECT \"user\".\"id\" FROM \"user\" WHERE \"user\".\"name\" = 'bob' LIMIT 1"),
    ("backticks", "mysql", "SELECT `t`.`id` FROM `t` WHERE `t`.`x` = 1 OR `t`.`y` = 2"),
    ("trailing-comment", "mysql", "SELECT 1 -- health check"),
    ("or-is-null", "mysql", "SELECT * FROM t WHERE deleted_at IS NULL OR deleted_at > '2024-01-01'"),
    ("placeholders", "postgresql", "SELECT * FROM t WHERE a = ANY($1) OR b = $2"),
    ("mysql-placeholders", "mysql", "SELECT * FROM t WHERE a = ? OR b = ?"),
    ("cte", "postgresql", "WITH x AS (SELECT 1) SELECT * FROM x"),
    ("sql-words-in-text", "mysql", "SELECT * FROM t WHERE comment = 'rock & roll or 1=1 maybe'"),
    ("if-function", "mysql", "SELECT IF(a = 1, 'yes', 'no') FROM t"),
    ("sleep-column", "postgresql", "SELECT sleep_hours FROM patients WHERE id = 3"),
    ("or-false-constant", "mysql", "SELECT * FROM t WHERE a = 1 OR 1 = 0"),
]  # fmt: skip


@pytest.mark.parametrize(("dialect", "sql"), [o[1:] for o in ORDINARY], ids=[o[0] for o in ORDINARY])
def test_ordinary_queries_are_not_injection(dialect: Dialect, sql: str) -> None:
    """ORM-style queries, comments, quotes inside literals and migrations are not reported."""
    assert check_sql(sql, dialect) == []


def test_a_cut_statement_is_not_held_to_its_open_literal() -> None:
    """When the DPI cut the statement, the literal left open at the cut is no unbalanced quote."""
    sql = "INSERT INTO docs (body) VALUES ('" + "a" * 100
    assert [h.kind for h in check_sql(sql)] == ["unbalanced_quote"]
    assert check_sql(sql, truncated=True) == []


def test_literal_checks_can_be_turned_off() -> None:
    """With `check_literals` off, an escaped payload inside a literal is not reported."""
    sql = "SELECT * FROM users WHERE name = 'x'' OR ''1''=''1'"
    assert check_sql(sql, check_literals=False) == []


def test_hits_name_where_they_start() -> None:
    """A hit's offset points at the text that made it and its detail quotes it."""
    sql = "SELECT * FROM users WHERE id = 1 OR 1=1"
    (hit,) = check_sql(sql)
    assert sql[hit.offset :].startswith("OR 1=1") and hit.detail.startswith("OR 1=1")


@pytest.mark.parametrize("sql", ["", ";;;", "'", "/*", "$$", "\x00\xff", "SELECT " * 500])
def test_any_text_is_judged_without_error(sql: str) -> None:
    """Odd or empty text never raises; it gives a list of hits."""
    assert isinstance(check_sql(sql, "mysql"), list)
    assert isinstance(check_sql(sql, "postgresql"), list)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("SELECT OR UNION 1=';\"`$#-*/()\\ab,@\n")), max_size=80))
def test_sql_like_text_never_breaks_the_checks(sql: str) -> None:
    """Text made of SQL's punctuation and keywords is judged in both dialects without error."""
    for dialect in ("mysql", "postgresql"):
        for hit in check_sql(sql, dialect):
            assert 0 <= hit.offset <= len(sql)
