//! From filters and record values to SQL: filters compile to a parameterised `WHERE` clause
//! over the bucket's index columns (never over the JSON), and record values give the index
//! column values of a write.
//!
//! Field names in a filter are looked up in the bucket's index list and never copied into the
//! SQL as typed: the SQL names the column from the bucket's validated configuration. Values
//! always travel as bound parameters. So whatever a filter contains, it can only select rows.

use serde_json::Value;

use super::buckets::{BucketSchema, ident};
use super::db::{Param, Params};
use crate::error::Error;
use crate::filter::Filter;
use crate::types::{IndexType, Sort, SortOrder};

/// A column a filter may use.
#[derive(Debug, Clone)]
pub(crate) enum Col {
    /// An index column of the bucket.
    Index { name: String, kind: IndexType },
    /// One of Moray's own integer columns (`_id`, `_mtime`, `_vnode`).
    Int(&'static str),
    /// One of Moray's own text columns (`_key`, `_etag`).
    Text(&'static str),
}

impl Col {
    fn sql(&self) -> String {
        match self {
            Col::Index { name, .. } => ident(name),
            Col::Int(c) | Col::Text(c) => (*c).to_owned(),
        }
    }
}

/// Resolves a filter or sort attribute to a column, or refuses it.
pub(crate) fn resolve(schema: &BucketSchema, attr: &str) -> Result<Col, Error> {
    match attr {
        "_id" => return Ok(Col::Int("_id")),
        "_mtime" => return Ok(Col::Int("_mtime")),
        "_vnode" => return Ok(Col::Int("_vnode")),
        "_key" => return Ok(Col::Text("_key")),
        "_etag" => return Ok(Col::Text("_etag")),
        _ => {}
    }
    let Some(spec) = schema.config.index.get(attr) else {
        return Err(Error::NotIndexed {
            bucket: schema.name.clone(),
            attribute: attr.to_owned(),
            message: format!(
                "bucket {} does not index {attr:?}; filters and sorts may only use indexed fields and _id, _key, _mtime, _etag, _vnode",
                schema.name
            ),
        });
    };
    if schema.reindexing.contains(attr) {
        return Err(Error::NotIndexed {
            bucket: schema.name.clone(),
            attribute: attr.to_owned(),
            message: format!(
                "the index on {attr:?} in bucket {} is still being filled; run reindexObjects until it reports nothing left",
                schema.name
            ),
        });
    }
    Ok(Col::Index {
        name: attr.to_owned(),
        kind: spec.kind,
    })
}

/// True for the decimal numbers Postgres `NUMERIC` accepts (as JSON writes them).
pub(crate) fn is_number(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (mant, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mant.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mant, None),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    let mant_ok = match frac {
        None => digits(int),
        Some(f) => (digits(int) || int.is_empty()) && (digits(f) || (f.is_empty() && digits(int))),
    };
    let exp_ok = match exp {
        None => true,
        Some(e) => digits(e.strip_prefix(['+', '-']).unwrap_or(e)) && e.len() <= 6,
    };
    mant_ok && exp_ok
}

/// A filter value converted for a column of `kind`, as a placeholder with its cast.
fn scalar_placeholder(
    kind: IndexType,
    attr: &str,
    v: &str,
    p: &mut Params,
) -> Result<String, Error> {
    match kind.scalar() {
        IndexType::Number => {
            if !is_number(v) {
                return Err(Error::invalid_query(format!(
                    "{attr} is a number index; {v:?} is not a number"
                )));
            }
            Ok(format!("{}::numeric", p.text(v)))
        }
        IndexType::Boolean => {
            if v != "true" && v != "false" {
                return Err(Error::invalid_query(format!(
                    "{attr} is a boolean index; {v:?} is not true or false"
                )));
            }
            Ok(format!("{}::boolean", p.text(v)))
        }
        _ => Ok(p.text(v)),
    }
}

fn placeholder(col: &Col, attr: &str, v: &str, p: &mut Params) -> Result<String, Error> {
    match col {
        Col::Index { kind, .. } => scalar_placeholder(*kind, attr, v, p),
        Col::Int(_) => {
            let i: i64 = v
                .parse()
                .map_err(|_| Error::invalid_query(format!("{attr} is an integer; {v:?} is not")))?;
            Ok(p.int(i))
        }
        Col::Text(_) => Ok(p.text(v)),
    }
}

fn is_array(col: &Col) -> bool {
    matches!(col, Col::Index { kind, .. } if kind.is_array())
}

fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Compiles a filter to a boolean SQL expression over the bucket's columns.
///
/// # Errors
/// `NotIndexed` for an attribute the bucket does not (yet) index, `InvalidQuery` for a value
/// that does not fit its column or an operator the column type does not support.
pub(crate) fn compile(schema: &BucketSchema, f: &Filter, p: &mut Params) -> Result<String, Error> {
    Ok(match f {
        Filter::And(v) | Filter::Or(v) => {
            let joiner = if matches!(f, Filter::And(_)) {
                " AND "
            } else {
                " OR "
            };
            let parts = v
                .iter()
                .map(|x| compile(schema, x, p))
                .collect::<Result<Vec<_>, _>>()?;
            format!("({})", parts.join(joiner))
        }
        // A missing value does not match, so its negation does (LDAP semantics, not SQL's
        // three-valued logic).
        Filter::Not(x) => format!("(NOT COALESCE({}, FALSE))", compile(schema, x, p)?),
        Filter::Equal { attr, value } => {
            let col = resolve(schema, attr)?;
            let ph = placeholder(&col, attr, value, p)?;
            if is_array(&col) {
                format!("({} @> ARRAY[{ph}])", col.sql())
            } else {
                format!("({} = {ph})", col.sql())
            }
        }
        Filter::GreaterOrEqual { attr, value } | Filter::LessOrEqual { attr, value } => {
            let op = if matches!(f, Filter::GreaterOrEqual { .. }) {
                ">="
            } else {
                "<="
            };
            let col = resolve(schema, attr)?;
            let ph = placeholder(&col, attr, value, p)?;
            if is_array(&col) {
                format!(
                    "(EXISTS (SELECT 1 FROM unnest({}) AS _e WHERE _e {op} {ph}))",
                    col.sql()
                )
            } else {
                format!("({} {op} {ph})", col.sql())
            }
        }
        Filter::Present { attr } => {
            let col = resolve(schema, attr)?;
            format!("({} IS NOT NULL)", col.sql())
        }
        Filter::Substring {
            attr,
            initial,
            any,
            fin,
        } => {
            let col = resolve(schema, attr)?;
            let ok = matches!(
                col,
                Col::Text(_)
                    | Col::Index {
                        kind: IndexType::String,
                        ..
                    }
            );
            if !ok {
                return Err(Error::invalid_query(format!(
                    "substring match on {attr} needs a string index"
                )));
            }
            let mut pat = like_escape(initial.as_deref().unwrap_or(""));
            pat.push('%');
            for a in any {
                pat.push_str(&like_escape(a));
                pat.push('%');
            }
            pat.push_str(&like_escape(fin.as_deref().unwrap_or("")));
            format!("({} LIKE {} ESCAPE '\\')", col.sql(), p.text(pat))
        }
    })
}

/// `ORDER BY` for the sort keys (empty for none).
///
/// # Errors
/// As [`resolve`]; array columns cannot be sorted on.
pub(crate) fn order_by(schema: &BucketSchema, sort: &[Sort]) -> Result<String, Error> {
    if sort.is_empty() {
        return Ok(String::new());
    }
    let mut parts = Vec::new();
    for s in sort {
        let col = resolve(schema, &s.attribute)?;
        if is_array(&col) {
            return Err(Error::invalid_query(format!(
                "cannot sort on array index {}",
                s.attribute
            )));
        }
        let dir = match s.order {
            SortOrder::Asc => "ASC",
            SortOrder::Desc => "DESC",
        };
        parts.push(format!("{} {dir}", col.sql()));
    }
    Ok(format!(" ORDER BY {}", parts.join(", ")))
}

fn scalar_text(kind: IndexType, v: &Value) -> Option<String> {
    match (kind.scalar(), v) {
        (IndexType::String, Value::String(s)) => Some(s.clone()),
        (IndexType::String, Value::Number(n)) => Some(n.to_string()),
        (IndexType::String, Value::Bool(b)) => Some(b.to_string()),
        (IndexType::Number, Value::Number(n)) => Some(n.to_string()),
        (IndexType::Number, Value::String(s)) if is_number(s) => Some(s.clone()),
        (IndexType::Boolean, Value::Bool(b)) => Some(b.to_string()),
        (IndexType::Boolean, Value::String(s)) if s == "true" || s == "false" => Some(s.clone()),
        _ => None,
    }
}

/// The index column value of `field` in a record value: scalars are converted where the
/// conversion is lossless (a number into a string index, "12" into a number index); anything
/// else is NULL, so the record simply does not match filters on that field.
pub(crate) fn index_value(kind: IndexType, v: Option<&Value>) -> Param {
    if kind.is_array() {
        let items = match v {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a.iter().filter_map(|x| scalar_text(kind, x)).collect()),
            Some(other) => scalar_text(kind, other).map(|s| vec![s]),
        };
        Param::TextArray(items)
    } else {
        Param::Text(v.and_then(|x| scalar_text(kind, x)))
    }
}

/// The SQL cast that turns a text (or text array) parameter into the column's type.
pub(crate) fn cast(kind: IndexType) -> &'static str {
    match kind {
        IndexType::String | IndexType::StringArray => "",
        IndexType::Number => "::numeric",
        IndexType::Boolean => "::boolean",
        IndexType::NumberArray => "::numeric[]",
        IndexType::BooleanArray => "::boolean[]",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{BucketConfig, IndexSpec};
    use std::collections::BTreeSet;

    fn schema() -> BucketSchema {
        BucketSchema {
            name: "b".into(),
            config: BucketConfig::new(1)
                .with_index("s", IndexSpec::new(IndexType::String))
                .with_index("n", IndexSpec::new(IndexType::Number))
                .with_index("t", IndexSpec::new(IndexType::Boolean))
                .with_index("a", IndexSpec::new(IndexType::StringArray))
                .with_index("late", IndexSpec::new(IndexType::String)),
            reindexing: BTreeSet::from(["late".to_owned()]),
            generation: 2,
            mtime: 0,
        }
    }

    fn sql(f: &str) -> Result<(String, usize), Error> {
        let mut p = Params::new();
        let s = compile(&schema(), &Filter::parse(f).unwrap(), &mut p)?;
        Ok((s, p.typed().len()))
    }

    #[test]
    fn compiles_to_parameters_only() {
        let (s, n) = sql("(&(s=x)(n>=5)(!(t=true))(a=q)(s=ab*c*)(_id<=9))").unwrap();
        assert_eq!(
            s,
            "((\"s\" = $1) AND (\"n\" >= $2::numeric) AND (NOT COALESCE((\"t\" = $3::boolean), FALSE)) \
             AND (\"a\" @> ARRAY[$4]) AND (\"s\" LIKE $5 ESCAPE '\\') AND (_id <= $6))"
        );
        assert_eq!(n, 6);
    }

    #[test]
    fn injection_in_values_stays_a_parameter() {
        let (s, n) = sql("(s=x'; DROP TABLE b; --)").unwrap();
        assert_eq!(s, "(\"s\" = $1)");
        assert_eq!(n, 1);
    }

    #[test]
    fn unknown_and_reindexing_fields_are_refused() {
        assert!(matches!(sql("(nope=1)"), Err(Error::NotIndexed { .. })));
        assert!(matches!(sql("(late=1)"), Err(Error::NotIndexed { .. })));
        assert!(matches!(
            sql("(&(s=1)(zz=1))"),
            Err(Error::NotIndexed { .. })
        ));
    }

    #[test]
    fn bad_values_are_invalid_queries() {
        assert!(matches!(sql("(n=abc)"), Err(Error::InvalidQuery { .. })));
        assert!(matches!(sql("(t=yes)"), Err(Error::InvalidQuery { .. })));
        assert!(matches!(sql("(_id=1.5)"), Err(Error::InvalidQuery { .. })));
        assert!(matches!(sql("(n=1*)"), Err(Error::InvalidQuery { .. })));
        assert!(matches!(sql("(a=x*)"), Err(Error::InvalidQuery { .. })));
    }

    #[test]
    fn numbers() {
        for ok in ["0", "-1", "1.5", "1e10", "1E-3", "-0.25", "10.", ".5"] {
            assert!(is_number(ok), "{ok}");
        }
        for bad in [
            "",
            "-",
            "1e",
            "e5",
            "1.2.3",
            "NaN",
            "inf",
            "1 ",
            "0x10",
            "1e1234567",
            ".",
        ] {
            assert!(!is_number(bad), "{bad}");
        }
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        let mut p = Params::new();
        let f = Filter::Substring {
            attr: "s".into(),
            initial: Some("50%_".into()),
            any: vec![],
            fin: Some("\\".into()),
        };
        compile(&schema(), &f, &mut p).unwrap();
        let v = format!("{:?}", p.into_typed()[0].0);
        assert!(v.contains(r#"50\\%\\_%\\\\"#), "{v}");
    }

    #[test]
    fn index_values() {
        use serde_json::json;
        let s = |v: Value| format!("{:?}", index_value(IndexType::String, Some(&v)));
        assert_eq!(s(json!("x")), "Text(Some(\"x\"))");
        assert_eq!(s(json!(5)), "Text(Some(\"5\"))");
        assert_eq!(s(json!({"a": 1})), "Text(None)");
        let n = |v: Value| format!("{:?}", index_value(IndexType::Number, Some(&v)));
        assert_eq!(n(json!("12")), "Text(Some(\"12\"))");
        assert_eq!(n(json!("twelve")), "Text(None)");
        let a = |v: Value| format!("{:?}", index_value(IndexType::StringArray, Some(&v)));
        assert_eq!(a(json!(["x", 1])), "TextArray(Some([\"x\", \"1\"]))");
        assert_eq!(a(json!("x")), "TextArray(Some([\"x\"]))");
        assert_eq!(
            format!("{:?}", index_value(IndexType::StringArray, None)),
            "TextArray(None)"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn attr() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("s".to_owned()),
                Just("n".to_owned()),
                Just("t".to_owned()),
                Just("a".to_owned()),
                Just("_key".to_owned()),
                Just("_id".to_owned()),
                "[a-z_]{1,8}",
            ]
        }

        fn leaf() -> impl Strategy<Value = Filter> {
            (attr(), ".{0,24}", 0..5u8).prop_map(|(a, v, op)| match op {
                0 => Filter::eq(a, v),
                1 => Filter::ge(a, v),
                2 => Filter::le(a, v),
                3 => Filter::present(a),
                _ => Filter::Substring {
                    attr: a,
                    initial: Some(v),
                    any: vec![],
                    fin: None,
                },
            })
        }

        fn filter() -> impl Strategy<Value = Filter> {
            leaf().prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 1..4).prop_map(Filter::And),
                    proptest::collection::vec(inner.clone(), 1..4).prop_map(Filter::Or),
                    inner.prop_map(Filter::negate),
                ]
            })
        }

        /// Everything in the SQL besides placeholders, casts, column names and the fixed
        /// keywords: must be nothing.
        fn residue(sql: &str) -> String {
            let mut s = sql.to_owned();
            for w in [
                "\"s\"",
                "\"n\"",
                "\"t\"",
                "\"a\"",
                "_key",
                "_id",
                "_mtime",
                "_etag",
                "_vnode",
                "::numeric",
                "::boolean",
                "NOT COALESCE",
                "FALSE",
                "IS NOT NULL",
                "LIKE",
                "ESCAPE '\\'",
                "EXISTS (SELECT 1 FROM unnest",
                "AS _e WHERE _e",
                "ARRAY[",
                "AND",
                "OR",
                "@>",
                ">=",
                "<=",
                "=",
            ] {
                s = s.replace(w, " ");
            }
            s.chars()
                .filter(|c| !c.is_ascii_digit() && !matches!(c, '$' | '(' | ')' | ']' | ',' | ' '))
                .collect()
        }

        #[test]
        fn residue_sees_embedded_text() {
            assert_eq!(residue("((\"s\" = $1) AND (_id >= $2))"), "");
            assert_ne!(residue("(\"s\" = 'x')"), "");
            assert_ne!(residue("(\"s\" = $1) OR 1=1; DROP TABLE b"), "");
        }

        proptest! {
            #[test]
            fn compiled_sql_never_contains_input_text(f in filter()) {
                let mut p = Params::new();
                if let Ok(sql) = compile(&schema(), &f, &mut p) {
                    prop_assert_eq!(residue(&sql), "", "{}", sql);
                }
            }
        }
    }
}
