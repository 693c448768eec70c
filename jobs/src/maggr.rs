//! `maggr`: key-wise aggregation of text columns, one of the compute environment's tools
//! (`maggr sum` is what a reducer of counts usually runs).
//!
//! Each input line is split into columns (on runs of blanks, or on the `-d` string). Every
//! column gets a list of operations: the one named for it with `-cN=...`, or else the list given
//! as the last argument (columns with neither are left out). Lines with the same values in the
//! `key` columns are aggregated together; with no `-c` at all, the first column is the key
//! when lines have more than one. One output line per key, in the order keys first appeared:
//! the key columns, then each other column's results, joined by the `-i` string (`,`), columns
//! joined by the `-o` string (the `-d` string, or a space).

use std::collections::HashMap;
use std::io::{self, BufRead, Write};

/// What can be done to a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Key,
    Nop,
    Count,
    Max,
    Mean,
    Min,
    Range,
    Sum,
}

/// Every operation, by name, as `maggr -l` lists them.
const OPS: &[(&str, Op, &str)] = &[
    (
        "key",
        Op::Key,
        "the column is (part of) the key lines are grouped by",
    ),
    ("nop", Op::Nop, "the column is ignored"),
    ("count", Op::Count, "the number of lines"),
    ("max", Op::Max, "the largest value"),
    ("mean", Op::Mean, "the mean of the values"),
    ("min", Op::Min, "the smallest value"),
    ("range", Op::Range, "the largest value less the smallest"),
    ("sum", Op::Sum, "the sum of the values"),
];

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn parse_ops(list: &str) -> io::Result<Vec<Op>> {
    list.split(',')
        .map(|name| {
            OPS.iter()
                .find(|(n, _, _)| *n == name.trim())
                .map(|(_, op, _)| *op)
                .ok_or_else(|| bad(format!("unknown operation {name:?} (maggr -l lists them)")))
        })
        .collect()
}

/// The command line.
#[derive(Debug, Default)]
struct Opts {
    /// Operations of named columns (0-based).
    columns: HashMap<usize, Vec<Op>>,
    /// Operations of every other column.
    default: Vec<Op>,
    delim: Option<String>,
    out_delim: Option<String>,
    inner: Option<String>,
    file: Option<String>,
    list: bool,
}

fn parse_args(args: &[String]) -> io::Result<Opts> {
    let mut o = Opts::default();
    let mut positional = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        let Some(flag) = a.strip_prefix('-').filter(|f| !f.is_empty()) else {
            positional.push(a.clone());
            continue;
        };
        let (name, inline) = flag.split_at(1);
        if name == "l" && inline.is_empty() {
            o.list = true;
            continue;
        }
        if !matches!(name, "c" | "d" | "o" | "i" | "f") {
            return Err(bad(format!("unknown option -{name}")));
        }
        let value = if inline.is_empty() {
            let v = args
                .get(i)
                .ok_or_else(|| bad(format!("-{name} needs a value")))?;
            i += 1;
            v.clone()
        } else {
            inline.to_owned()
        };
        match name {
            "c" => {
                let (col, ops) = value
                    .split_once('=')
                    .ok_or_else(|| bad(format!("-c{value}: say -cN=op[,op...]")))?;
                let n: usize = col
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad(format!("-c{value}: columns are numbered from 1")))?;
                o.columns.insert(n - 1, parse_ops(ops)?);
            }
            "d" | "o" | "i" if value.is_empty() => {
                return Err(bad(format!("-{name} needs a non-empty string")));
            }
            "d" => o.delim = Some(value),
            "o" => o.out_delim = Some(value),
            "i" => o.inner = Some(value),
            _ => o.file = Some(value),
        }
    }
    match positional.as_slice() {
        [] => {}
        [list] => o.default = parse_ops(list)?,
        more => {
            return Err(bad(format!(
                "one list of operations for the other columns, not {}",
                more.len()
            )));
        }
    }
    if o.default.contains(&Op::Key) {
        return Err(bad(
            "key is for named columns (-cN=key), not for every other column".into(),
        ));
    }
    if !o.list
        && o.default.is_empty()
        && o.columns
            .values()
            .flatten()
            .all(|op| *op == Op::Key || *op == Op::Nop)
    {
        return Err(bad(
            "no operation to perform: name one (maggr -l lists them)".into(),
        ));
    }
    Ok(o)
}

/// One column's running figures within one group.
#[derive(Debug, Clone, Default)]
struct Acc {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    /// Whether every value was a whole number (then sums and extremes print as integers).
    whole: bool,
}

impl Acc {
    fn add(&mut self, v: f64, whole: bool) {
        if self.count == 0 {
            (self.min, self.max, self.whole) = (v, v, true);
        }
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.whole &= whole;
    }

    fn result(&self, op: Op) -> String {
        let num = |v: f64| {
            if self.whole && v.is_finite() && v.abs() < 9.0e15 {
                format!("{}", v as i64)
            } else {
                format!("{v}")
            }
        };
        match op {
            Op::Count => self.count.to_string(),
            Op::Sum => num(self.sum),
            Op::Key | Op::Nop => String::new(),
            _ if self.count == 0 => String::new(),
            Op::Max => num(self.max),
            Op::Min => num(self.min),
            Op::Range => num(self.max - self.min),
            Op::Mean => format!("{}", self.sum / self.count as f64),
        }
    }
}

/// A value as a number, and whether it is a whole one.
fn number(s: &str) -> Option<(f64, bool)> {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Some((i as f64, true));
    }
    t.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| (v, false))
}

/// Runs `maggr` with `args` over `input` (unless `-f` names a file), writing to `out`.
///
/// # Errors
/// A bad command line, a value that is not a number in a column to compute on, I/O failures.
pub fn run(args: &[String], input: impl BufRead, mut out: impl Write) -> io::Result<()> {
    let o = parse_args(args)?;
    if o.list {
        for (name, _, what) in OPS {
            writeln!(out, "{name:<6} {what}")?;
        }
        return Ok(());
    }
    let input: Box<dyn BufRead> = match &o.file {
        Some(f) => Box::new(io::BufReader::new(
            std::fs::File::open(f).map_err(|e| io::Error::new(e.kind(), format!("{f}: {e}")))?,
        )),
        None => Box::new(input),
    };
    let out_delim = o
        .out_delim
        .clone()
        .or_else(|| o.delim.clone())
        .unwrap_or_else(|| " ".into());
    let inner = o.inner.clone().unwrap_or_else(|| ",".into());
    // With no column named, the first is the key once lines show more than one.
    let mut implicit_key: Option<bool> = if o.columns.is_empty() {
        None
    } else {
        Some(false)
    };
    let ops_of = |col: usize, implicit: bool| -> &[Op] {
        if implicit && col == 0 {
            &[Op::Key]
        } else {
            o.columns
                .get(&col)
                .map_or(o.default.as_slice(), Vec::as_slice)
        }
    };
    let mut order: Vec<(Vec<String>, HashMap<usize, Acc>)> = Vec::new();
    let mut index: HashMap<Vec<String>, usize> = HashMap::new();
    let mut widest = 0;
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        let fields: Vec<&str> = match &o.delim {
            Some(d) => line.split(d.as_str()).collect(),
            None => line.split_whitespace().collect(),
        };
        if fields.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let implicit = *implicit_key.get_or_insert(fields.len() > 1);
        widest = widest.max(fields.len());
        let key: Vec<String> = fields
            .iter()
            .enumerate()
            .filter(|(c, _)| ops_of(*c, implicit).contains(&Op::Key))
            .map(|(_, f)| (*f).to_owned())
            .collect();
        let g = match index.get(&key) {
            Some(g) => *g,
            None => {
                index.insert(key.clone(), order.len());
                order.push((key, HashMap::new()));
                order.len() - 1
            }
        };
        for (c, f) in fields.iter().enumerate() {
            let ops = ops_of(c, implicit);
            if ops.iter().all(|op| matches!(op, Op::Key | Op::Nop)) {
                continue;
            }
            let acc = order[g].1.entry(c).or_default();
            if ops.iter().all(|op| *op == Op::Count) {
                acc.add(0.0, true);
                continue;
            }
            let (v, whole) = number(f).ok_or_else(|| {
                bad(format!(
                    "line {}, column {}: {f:?} is not a number",
                    n + 1,
                    c + 1
                ))
            })?;
            acc.add(v, whole);
        }
    }
    let implicit = implicit_key.unwrap_or(false);
    let widest = widest.max(o.columns.keys().map(|c| c + 1).max().unwrap_or(0));
    for (key, accs) in &order {
        let mut cols: Vec<String> = key.clone();
        for c in 0..widest {
            let ops = ops_of(c, implicit);
            let shown: Vec<Op> = ops
                .iter()
                .copied()
                .filter(|op| !matches!(op, Op::Key | Op::Nop))
                .collect();
            if shown.is_empty() {
                continue;
            }
            let acc = accs.get(&c).cloned().unwrap_or_default();
            let r: Vec<String> = shown.iter().map(|op| acc.result(*op)).collect();
            cols.push(r.join(&inner));
        }
        writeln!(out, "{}", cols.join(&out_delim))?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn maggr(args: &[&str], input: &str) -> io::Result<String> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let mut out = Vec::new();
        run(&args, input.as_bytes(), &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_manual_s_examples() {
        let counts = "foo 1\nbar 1\nfoo 2\nfoo 5\n";
        assert_eq!(
            maggr(&["sum,mean"], counts).unwrap(),
            "foo 8,2.6666666666666665\nbar 1,1\n"
        );
        assert_eq!(
            maggr(&["-c2=sum", "mean"], "1 2\n3 4\n5 6\n7 8\n").unwrap(),
            "4 20\n"
        );
        assert_eq!(
            maggr(&["-c2=sum,max", "mean,min"], "1 2 3\n4 5 6\n7 8 9\n").unwrap(),
            "4,1 15,8 6,3\n"
        );
        assert_eq!(
            maggr(&["-c1=key", "-c2=count,sum"], counts).unwrap(),
            "foo 3,8\nbar 1,1\n"
        );
        assert_eq!(
            maggr(
                &["-d", ":", "-o", "-", "-c1=key", "sum"],
                "foo:1:2:3\nbar:4:5:6\nfoo:7:8:9\nbaz:10:11:12\n"
            )
            .unwrap(),
            "foo-8-10-12\nbar-4-5-6\nbaz-10-11-12\n"
        );
        assert_eq!(
            maggr(
                &["-i", "#", "-c1=key", "-c2=sum,mean", "-c3=count"],
                "foo 1 2 3\nbar 4 5 6\nfoo 7 8 9\nbaz 10 11 12\n"
            )
            .unwrap(),
            "foo 8#4 2\nbar 4#4 1\nbaz 10#10 1\n"
        );
    }

    #[test]
    fn a_column_of_counts_sums_to_one_line() {
        // What a reducer over `wc -l` outputs sees (wc pads with blanks).
        assert_eq!(maggr(&["sum"], "  12\n3\n\n 40 \n").unwrap(), "55\n");
        assert_eq!(
            maggr(&["min,max,range,mean"], "2\n-1.5\n4\n").unwrap(),
            "-1.5,4,5.5,1.5\n"
        );
        assert_eq!(maggr(&["sum"], "").unwrap(), "");
    }

    #[test]
    fn bad_input_and_bad_command_lines_say_what_is_wrong() {
        let e = maggr(&["sum"], "1\nabc\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("line 2, column 1: \"abc\" is not a number"),
            "{e}"
        );
        for (args, says) in [
            (&["total"][..], "unknown operation \"total\""),
            (&["-c0=sum"][..], "numbered from 1"),
            (&["-c2"][..], "-cN=op"),
            (&["-x", "sum"][..], "unknown option -x"),
            (&["-d"][..], "-d needs a value"),
            (&["key"][..], "named columns"),
            (&["sum", "mean"][..], "one list of operations"),
            (&["-c1=key"][..], "no operation"),
        ] {
            let e = maggr(args, "1 2\n").unwrap_err();
            assert!(e.to_string().contains(says), "{args:?}: {e}");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        assert!(maggr(&["-l"], "").unwrap().contains("range"));
    }

    proptest! {
        #[test]
        fn any_input_is_aggregated_or_refused_never_a_panic(
            input in "[a-c0-9 .:\\-\n]{0,200}",
            args in proptest::collection::vec("-?[a-z0-9=,:]{0,8}", 0..4),
        ) {
            let args: Vec<String> = args;
            let mut out = Vec::new();
            let _ = run(&args, input.as_bytes(), &mut out);
        }

        #[test]
        fn counts_per_key_add_up_to_the_lines(
            rows in proptest::collection::vec(("[a-c]", 0i64..1000), 1..50),
        ) {
            let input: String = rows.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
            let out = maggr(&["-c1=key", "-c2=count,sum"], &input).unwrap();
            let (mut lines, mut total) = (0u64, 0i64);
            for l in out.lines() {
                let (_, figures) = l.split_once(' ').unwrap();
                let (c, s) = figures.split_once(',').unwrap();
                lines += c.parse::<u64>().unwrap();
                total += s.parse::<i64>().unwrap();
            }
            prop_assert_eq!(lines, rows.len() as u64);
            prop_assert_eq!(total, rows.iter().map(|r| r.1).sum::<i64>());
        }
    }
}
