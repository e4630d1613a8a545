//! Recognises DDL statements (from QUERY events) that change or destroy a
//! table: the tables they name, so the reader can tell whether an event
//! table was altered, dropped, truncated or renamed.
//!
//! This is a tokenizer for the statement heads MariaDB writes to the
//! binlog, not an SQL parser: it only needs the statement kind and the
//! table names that follow it.

/// What a DDL statement does to the tables it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdlTarget {
    pub verb: &'static str,
    /// `(database if qualified, table)`.
    pub tables: Vec<(Option<String>, String)>,
    /// `DROP DATABASE` names a database, not tables.
    pub database: Option<String>,
}

fn tokens(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '`' {
                if chars.peek() == Some(&'`') {
                    cur.push('`');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '`' => quoted = true,
            '/' if chars.peek() == Some(&'*') => {
                // Skip a comment (`/*!…*/` version comments included).
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
                flush(&mut cur, &mut out);
            }
            c if c.is_whitespace() => flush(&mut cur, &mut out),
            ',' | ';' | '(' | ')' => {
                flush(&mut cur, &mut out);
                out.push(c.to_string());
            }
            '.' => {
                flush(&mut cur, &mut out);
                out.push(".".into());
            }
            _ => cur.push(c),
        }
        if out.len() > 64 {
            break;
        }
    }
    flush(&mut cur, &mut out);
    out
}

fn is(t: Option<&String>, kw: &str) -> bool {
    t.is_some_and(|t| t.eq_ignore_ascii_case(kw))
}

/// Reads `name` or `db . name` at `i`; returns it and the next index.
fn qualified(t: &[String], i: usize) -> Option<((Option<String>, String), usize)> {
    let first = t.get(i)?.clone();
    if t.get(i + 1).map(String::as_str) == Some(".") {
        let second = t.get(i + 2)?.clone();
        Some(((Some(first), second), i + 3))
    } else {
        Some(((None, first), i + 1))
    }
}

/// The tables a statement alters, drops, truncates or renames; `None` for
/// anything else (DML, CREATE, BEGIN, …).
pub fn ddl_target(sql: &str) -> Option<DdlTarget> {
    let t = tokens(sql);
    let mut i = 0;
    let first = t.first()?.to_ascii_uppercase();
    let verb: &'static str = match first.as_str() {
        "ALTER" => "ALTER",
        "DROP" => "DROP",
        "TRUNCATE" => "TRUNCATE",
        "RENAME" => "RENAME",
        _ => return None,
    };
    i += 1;
    // Modifiers MariaDB may write before TABLE.
    while is(t.get(i), "ONLINE") || is(t.get(i), "IGNORE") || is(t.get(i), "TEMPORARY") {
        i += 1;
    }
    if verb == "DROP" && (is(t.get(i), "DATABASE") || is(t.get(i), "SCHEMA")) {
        i += 1;
        if is(t.get(i), "IF") {
            i += 2;
        }
        return Some(DdlTarget {
            verb: "DROP DATABASE",
            tables: vec![],
            database: t.get(i).cloned(),
        });
    }
    if is(t.get(i), "TABLE") || is(t.get(i), "TABLES") {
        i += 1;
    } else if verb != "TRUNCATE" {
        return None;
    }
    if is(t.get(i), "IF") {
        i += if is(t.get(i + 1), "NOT") { 3 } else { 2 };
    }
    let mut tables = Vec::new();
    while let Some((name, next)) = qualified(&t, i) {
        tables.push(name);
        i = next;
        if verb == "RENAME" && is(t.get(i), "TO") {
            // The new name is not an event table being destroyed unless it is
            // one already; report it too, the caller filters.
            if let Some((to, n)) = qualified(&t, i + 1) {
                tables.push(to);
                i = n;
            }
        }
        if t.get(i).map(String::as_str) == Some(",") && verb != "ALTER" {
            i += 1;
            continue;
        }
        break;
    }
    Some(DdlTarget {
        verb,
        tables,
        database: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Vec<(Option<String>, String)> {
        ddl_target(sql).unwrap().tables
    }

    #[test]
    fn statements() {
        assert_eq!(
            names("ALTER TABLE match_result_events ADD COLUMN x INT"),
            vec![(None, "match_result_events".into())]
        );
        assert_eq!(
            names("DROP TABLE IF EXISTS `db`.`match_result_events_2026Q4`, t2 /* generated by server */"),
            vec![
                (Some("db".into()), "match_result_events_2026Q4".into()),
                (None, "t2".into())
            ]
        );
        assert_eq!(
            names("truncate match_result_events"),
            vec![(None, "match_result_events".into())]
        );
        assert_eq!(
            names("RENAME TABLE a TO b, c TO d"),
            vec![
                (None, "a".into()),
                (None, "b".into()),
                (None, "c".into()),
                (None, "d".into())
            ]
        );
        assert_eq!(
            ddl_target("DROP DATABASE IF EXISTS `x`")
                .unwrap()
                .database
                .as_deref(),
            Some("x")
        );
        assert!(ddl_target("CREATE TABLE match_result_events_2027Q1 (id int)").is_none());
        assert!(ddl_target("BEGIN").is_none());
        assert!(ddl_target("ALTER USER x").is_none());
    }
}
