//! Moray filters: the parser, the renderer, and the SQL the server compiles a filter to for a
//! bucket with string, number, boolean and array indexes.

use std::sync::OnceLock;

use moray::filter::{Filter, MAX_DEPTH};
use moray::types::{BucketConfig, IndexSpec, IndexType};

fn config() -> &'static BucketConfig {
    static CONFIG: OnceLock<BucketConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        BucketConfig::new(1)
            .with_index("s", IndexSpec::new(IndexType::String))
            .with_index("name", IndexSpec::unique(IndexType::String))
            .with_index("n", IndexSpec::new(IndexType::Number))
            .with_index("t", IndexSpec::new(IndexType::Boolean))
            .with_index("a", IndexSpec::new(IndexType::StringArray))
            .with_index("na", IndexSpec::new(IndexType::NumberArray))
            .with_index("ba", IndexSpec::new(IndexType::BooleanArray))
            .with_index("late", IndexSpec::new(IndexType::String))
    })
}

/// A filter as `findObjects`, `updateObjects` and `deleteMany` take it: the parse, its
/// rendering, and the compiled SQL, which must hold nothing of the filter but column names.
pub fn moray_filter(data: &[u8]) {
    let s = crate::text(data);
    let parsed = Filter::parse(&s);
    if let Ok(f) = &parsed {
        assert!(depth(f) <= MAX_DEPTH + 1, "{s:?}");
        for a in f.attributes() {
            assert!(!a.is_empty());
            assert!(
                a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            );
        }
        let rendered = f.to_string();
        assert_eq!(
            Filter::parse(&rendered).as_ref(),
            Ok(f),
            "{s:?} -> {rendered:?}"
        );
    }
    match moray::server::compile_filter(config(), &["late"], &s) {
        Ok((sql, params)) => {
            assert!(parsed.is_ok(), "{s:?} compiled but does not parse");
            assert_eq!(residue(&sql), "", "{s:?} -> {sql}");
            // Placeholders are $1..$params, each used once.
            let used: Vec<usize> = sql
                .split('$')
                .skip(1)
                .map(|r| {
                    let d: String = r.chars().take_while(char::is_ascii_digit).collect();
                    d.parse().expect("a placeholder number")
                })
                .collect();
            assert_eq!(used, (1..=params).collect::<Vec<_>>(), "{sql}");
        }
        Err(moray::Error::InvalidQuery { .. } | moray::Error::NotIndexed { .. }) => {}
        Err(e) => panic!("{s:?}: unexpected error {e:?}"),
    }
}

fn depth(f: &Filter) -> usize {
    match f {
        Filter::And(v) | Filter::Or(v) => 1 + v.iter().map(depth).max().unwrap_or(0),
        Filter::Not(x) => 1 + depth(x),
        _ => 1,
    }
}

/// Everything in the SQL besides placeholders, casts, column names and the fixed keywords.
fn residue(sql: &str) -> String {
    let mut s = sql.to_owned();
    for w in [
        "\"name\"",
        "\"late\"",
        "\"na\"",
        "\"ba\"",
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
