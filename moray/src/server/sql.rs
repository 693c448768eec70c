//! The operator's `sql` RPC: one statement on the primary, with values sent as text (Postgres
//! parses each as the type it expects there, exactly as if typed into psql), rows returned as
//! JSON objects.

use bytes::{Buf, BytesMut};
use serde_json::{Map, Number, Value};
use tokio_postgres::types::{Format, FromSql, IsNull, ToSql, Type, to_sql_checked};

use super::db::{Db, Op};

/// A value bound in text format, whatever type the statement wants.
#[derive(Debug)]
struct TextParam(Option<String>);

impl ToSql for TextParam {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            None => Ok(IsNull::Yes),
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// One result cell as JSON.
struct Cell(Value);

fn numeric_to_string(mut raw: &[u8]) -> Option<String> {
    // Binary NUMERIC: ndigits, weight, sign, dscale, then base-10000 digits.
    if raw.len() < 8 {
        return None;
    }
    let ndigits = raw.get_u16() as usize;
    let weight = raw.get_i16() as i32;
    let sign = raw.get_u16();
    let dscale = raw.get_u16() as usize;
    if sign == 0xC000 {
        return Some("NaN".into());
    }
    if raw.len() < ndigits * 2 {
        return None;
    }
    let digits: Vec<u16> = (0..ndigits).map(|_| raw.get_u16()).collect();
    let mut int = String::new();
    let mut frac = String::new();
    for (i, d) in digits.iter().enumerate() {
        let pos = weight - i as i32;
        let s = format!("{d:04}");
        if pos >= 0 {
            int.push_str(&s);
        } else {
            frac.push_str(&s);
        }
    }
    // Whole groups of zeros between the last digit and the decimal point.
    let last_pos = weight - ndigits as i32 + 1;
    if last_pos > 0 {
        for _ in 0..last_pos {
            int.push_str("0000");
        }
    }
    // Leading fractional zero groups.
    if weight < -1 {
        frac = "0000".repeat((-weight - 1) as usize) + &frac;
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let mut frac: String = frac.chars().take(dscale).collect();
    while frac.len() < dscale {
        frac.push('0');
    }
    let sign = if sign == 0x4000 { "-" } else { "" };
    Some(if dscale > 0 {
        format!("{sign}{int}.{frac}")
    } else {
        format!("{sign}{int}")
    })
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let v = match *ty {
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => Value::from(i16::from_sql(ty, raw)?),
            Type::INT4 => Value::from(i32::from_sql(ty, raw)?),
            Type::INT8 => Value::from(i64::from_sql(ty, raw)?),
            Type::OID => Value::from(u32::from_sql(ty, raw)?),
            Type::FLOAT4 => Number::from_f64(f64::from(f32::from_sql(ty, raw)?))
                .map_or(Value::Null, Value::Number),
            Type::FLOAT8 => {
                Number::from_f64(f64::from_sql(ty, raw)?).map_or(Value::Null, Value::Number)
            }
            Type::NUMERIC => match numeric_to_string(raw) {
                Some(s) => s
                    .parse::<Number>()
                    .map(Value::Number)
                    .unwrap_or(Value::String(s)),
                None => Value::Null,
            },
            Type::JSON | Type::JSONB => Value::from_sql(ty, raw)?,
            Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::NAME_ARRAY | Type::BPCHAR_ARRAY => {
                Value::from(Vec::<Option<String>>::from_sql(ty, raw)?)
            }
            Type::INT4_ARRAY => Value::from(Vec::<Option<i32>>::from_sql(ty, raw)?),
            Type::INT8_ARRAY => Value::from(Vec::<Option<i64>>::from_sql(ty, raw)?),
            Type::BOOL_ARRAY => Value::from(Vec::<Option<bool>>::from_sql(ty, raw)?),
            _ => match <&str as FromSql>::from_sql(&Type::TEXT, raw) {
                // Text-like types (text, varchar, char, name, unknown, enums) are UTF-8.
                Ok(s) if <&str as FromSql>::accepts(ty) => Value::String(s.to_owned()),
                _ => Value::String(format!("<{} value, {} bytes>", ty.name(), raw.len())),
            },
        };
        Ok(Cell(v))
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Runs the statement and returns its rows.
pub(crate) async fn run(db: &Db, statement: &str, values: &[Value]) -> Op<Vec<Value>> {
    let conn = db.conn().await?;
    let stmt = conn.prepare(statement).await?;
    let params: Vec<TextParam> = values.iter().map(|v| TextParam(text_of(v))).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let rows = conn.query(&stmt, &refs).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut obj = Map::new();
        for (i, col) in row.columns().iter().enumerate() {
            let Cell(v) = row.try_get(i)?;
            obj.insert(col.name().to_owned(), v);
        }
        out.push(Value::Object(obj));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [ndigits, weight as u16, sign, dscale] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_decode() {
        assert_eq!(numeric_to_string(&enc(0, 0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(numeric_to_string(&enc(1, 0, 0, 0, &[42])).unwrap(), "42");
        assert_eq!(numeric_to_string(&enc(1, 1, 0, 0, &[1])).unwrap(), "10000");
        assert_eq!(
            numeric_to_string(&enc(2, 0, 0x4000, 2, &[12, 5000])).unwrap(),
            "-12.50"
        );
        assert_eq!(
            numeric_to_string(&enc(1, -1, 0, 4, &[25])).unwrap(),
            "0.0025"
        );
        assert_eq!(
            numeric_to_string(&enc(1, -2, 0, 8, &[5])).unwrap(),
            "0.00000005"
        );
        assert_eq!(
            numeric_to_string(&enc(2, 1, 0, 0, &[1, 2])).unwrap(),
            "10002"
        );
    }
}
