//! Column types that move between engines. A load reads a PostgreSQL `numeric(12,2)` and writes
//! a DuckDB `DECIMAL(12,2)`; schema evolution widens `integer` to `bigint`. [`ColumnType`] is the
//! engine-neutral name in between: adapters parse their own type names into it and render it
//! back in their dialect.

use std::fmt;

/// A column type as loads and schema evolution see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Boolean,
    /// 8-, 16- and 32-bit integers.
    Integer,
    BigInt,
    Double,
    Decimal {
        precision: u8,
        scale: u8,
    },
    Varchar,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Json,
    Blob,
    Uuid,
    /// Months, days and microseconds, as both engines hold an interval.
    Interval,
    /// A list of values of one type: DuckDB's `INTEGER[]`, PostgreSQL's one-dimensional
    /// `integer[]`. Both engines spell it the same way.
    List(Box<ColumnType>),
    /// Anything else (lists, structs, ranges), kept as the engine spelled it; another engine
    /// receives it as text.
    Other(String),
}

impl ColumnType {
    /// Reads a type as DuckDB or PostgreSQL spell it (`INTEGER`, `int4`, `character varying(20)`,
    /// `timestamp with time zone`, `DECIMAL(18,3)`), case-insensitively.
    pub fn parse(name: &str) -> ColumnType {
        if let Some(element) = name.trim().strip_suffix("[]") {
            return ColumnType::List(Box::new(ColumnType::parse(element)));
        }
        let mut lower = name.trim().to_ascii_lowercase();
        // A precision inside a name (`timestamp(3) with time zone`) says nothing Weir keeps.
        if let (Some(i), Some(j)) = (lower.find('('), lower.find(')'))
            && i < j
            && j + 1 < lower.len()
            && !lower.starts_with("struct")
            && !lower.starts_with("map")
        {
            lower = format!("{}{}", &lower[..i], &lower[j + 1..]);
        }
        let (base, args) = match lower.find('(') {
            Some(i) if lower.ends_with(')') && !lower.starts_with("struct") && !lower.starts_with("map") => {
                (lower[..i].trim().to_string(), Some(lower[i + 1..lower.len() - 1].to_string()))
            }
            _ => (lower.clone(), None),
        };
        match base.as_str() {
            "boolean" | "bool" => ColumnType::Boolean,
            "tinyint" | "smallint" | "integer" | "int" | "int1" | "int2" | "int4" | "utinyint" | "usmallint" | "serial" | "smallserial" => {
                ColumnType::Integer
            }
            "bigint" | "int8" | "uinteger" | "bigserial" | "long" => ColumnType::BigInt,
            "double" | "double precision" | "float" | "float4" | "float8" | "real" => ColumnType::Double,
            "decimal" | "numeric" => match args.as_deref().map(parse_precision) {
                Some(Some((precision, scale))) => ColumnType::Decimal { precision, scale },
                // An unbounded numeric keeps every digit only as text or as the widest decimal.
                _ => ColumnType::Decimal { precision: 38, scale: 9 },
            },
            "varchar" | "text" | "string" | "character varying" | "char" | "character" | "bpchar" | "name" | "enum" => ColumnType::Varchar,
            "date" => ColumnType::Date,
            "time" | "time without time zone" => ColumnType::Time,
            "timestamp" | "timestamp without time zone" | "datetime" | "timestamp_us" => ColumnType::Timestamp,
            "timestamptz" | "timestamp with time zone" => ColumnType::TimestampTz,
            "json" | "jsonb" => ColumnType::Json,
            "blob" | "bytea" | "varbinary" | "binary" => ColumnType::Blob,
            "uuid" => ColumnType::Uuid,
            // PostgreSQL may name the fields kept (`interval day to second`).
            b if b == "interval" || b.starts_with("interval ") => ColumnType::Interval,
            _ => ColumnType::Other(name.trim().to_string()),
        }
    }

    /// The narrowest type both `self` and `other` fit in, along the widening order users of
    /// dlt and Sling expect: integer -> bigint -> decimal -> double -> varchar; dates widen to
    /// timestamps; anything else that differs becomes varchar, which holds every value's text.
    pub fn widen(&self, other: &ColumnType) -> ColumnType {
        use ColumnType::*;
        if self == other {
            return self.clone();
        }
        match (self, other) {
            (Integer, BigInt) | (BigInt, Integer) => BigInt,
            (Integer | BigInt, Decimal { precision, scale }) | (Decimal { precision, scale }, Integer | BigInt) => {
                // A bigint needs 19 integral digits.
                let integral = (precision - scale).max(19);
                if integral + scale <= 38 { Decimal { precision: integral + scale, scale: *scale } } else { Double }
            }
            (Decimal { precision: p1, scale: s1 }, Decimal { precision: p2, scale: s2 }) => {
                let scale = *s1.max(s2);
                let integral = (p1 - s1).max(p2 - s2);
                if integral + scale <= 38 { Decimal { precision: integral + scale, scale } } else { Double }
            }
            (Integer | BigInt | Decimal { .. }, Double) | (Double, Integer | BigInt | Decimal { .. }) => Double,
            (Date, Timestamp) | (Timestamp, Date) => Timestamp,
            (Date | Timestamp, TimestampTz) | (TimestampTz, Date | Timestamp) => TimestampTz,
            (List(a), List(b)) => List(Box::new(a.widen(b))),
            _ => Varchar,
        }
    }

    /// Whether every value of `self` fits in `other` without loss, so a column of type
    /// `other` can receive it as it is.
    pub fn fits_in(&self, other: &ColumnType) -> bool {
        self.widen(other) == *other
    }

    /// Whether a list of this type crosses between the engines as a list: both hold it, and
    /// both bulk paths (DuckDB's appender, PostgreSQL's binary `COPY`) carry its elements
    /// as they are. A list of anything else (UUIDs, JSON, lists, structs) crosses as text.
    pub fn is_list_element(&self) -> bool {
        use ColumnType::*;
        matches!(self, Boolean | Integer | BigInt | Double | Decimal { .. } | Varchar | Date | Time | Timestamp | TimestampTz | Blob)
    }

    /// Whether the type is one of the shared names all through; a type holding
    /// [`ColumnType::Other`] is spelled as its engine spelled it.
    pub fn is_shared(&self) -> bool {
        match self {
            ColumnType::Other(_) => false,
            ColumnType::List(element) => element.is_shared(),
            _ => true,
        }
    }
}

impl fmt::Display for ColumnType {
    /// The portable SQL spelling, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Boolean => f.write_str("boolean"),
            ColumnType::Integer => f.write_str("integer"),
            ColumnType::BigInt => f.write_str("bigint"),
            ColumnType::Double => f.write_str("double"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::Varchar => f.write_str("varchar"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Time => f.write_str("time"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::TimestampTz => f.write_str("timestamptz"),
            ColumnType::Json => f.write_str("json"),
            ColumnType::Blob => f.write_str("blob"),
            ColumnType::Uuid => f.write_str("uuid"),
            ColumnType::Interval => f.write_str("interval"),
            ColumnType::List(element) => write!(f, "{element}[]"),
            ColumnType::Other(s) => f.write_str(s),
        }
    }
}

fn parse_precision(args: &str) -> Option<(u8, u8)> {
    let mut parts = args.split(',').map(|p| p.trim().parse::<u8>());
    let precision = parts.next()?.ok()?;
    let scale = match parts.next() {
        Some(s) => s.ok()?,
        None => 0,
    };
    ((1..=38).contains(&precision) && scale <= precision).then_some((precision, scale))
}

#[cfg(test)]
mod tests {
    use super::ColumnType::{self, *};

    #[test]
    fn parses_both_engines_spellings() {
        assert_eq!(ColumnType::parse("INTEGER"), Integer);
        assert_eq!(ColumnType::parse("int4"), Integer);
        assert_eq!(ColumnType::parse("character varying(20)"), Varchar);
        assert_eq!(ColumnType::parse("DECIMAL(18,3)"), Decimal { precision: 18, scale: 3 });
        assert_eq!(ColumnType::parse("numeric"), Decimal { precision: 38, scale: 9 });
        assert_eq!(ColumnType::parse("timestamp with time zone"), TimestampTz);
        assert_eq!(ColumnType::parse("TIMESTAMP WITH TIME ZONE"), TimestampTz);
        assert_eq!(ColumnType::parse("jsonb"), Json);
        assert_eq!(ColumnType::parse("timestamp(3) without time zone"), Timestamp);
        assert_eq!(ColumnType::parse("timestamp(0) with time zone"), TimestampTz);
        assert_eq!(ColumnType::parse("time(6) without time zone"), Time);
        assert_eq!(ColumnType::parse("numeric(10,2)[]"), List(Box::new(Decimal { precision: 10, scale: 2 })));
        assert_eq!(ColumnType::parse("INTERVAL"), Interval);
        assert_eq!(ColumnType::parse("interval day to second(3)"), Interval);
        assert_eq!(ColumnType::parse("interval[]"), List(Box::new(Interval)));
        assert_eq!(ColumnType::parse("INTEGER[]"), List(Box::new(Integer)));
        assert_eq!(ColumnType::parse("VARCHAR[][]"), List(Box::new(List(Box::new(Varchar)))));
        assert_eq!(ColumnType::parse("STRUCT(a INTEGER)"), Other("STRUCT(a INTEGER)".into()));
        assert_eq!(ColumnType::parse("STRUCT(a INTEGER)[]"), List(Box::new(Other("STRUCT(a INTEGER)".into()))));
        assert_eq!(ColumnType::parse("timestamp with time zone[]").to_string(), "timestamptz[]");
        assert!(!ColumnType::parse("STRUCT(a INTEGER)[]").is_shared());
        assert!(ColumnType::parse("numeric(10,2)[]").is_shared());
    }

    #[test]
    fn widening_follows_int_bigint_double_varchar() {
        assert_eq!(Integer.widen(&BigInt), BigInt);
        assert_eq!(BigInt.widen(&Double), Double);
        assert_eq!(Double.widen(&Varchar), Varchar);
        assert_eq!(Boolean.widen(&Integer), Varchar);
        assert_eq!(Date.widen(&Timestamp), Timestamp);
        assert_eq!(Integer.widen(&Decimal { precision: 10, scale: 2 }), Decimal { precision: 21, scale: 2 });
        assert_eq!(Decimal { precision: 10, scale: 2 }.widen(&Decimal { precision: 5, scale: 4 }), Decimal { precision: 12, scale: 4 });
        assert!(Integer.fits_in(&BigInt));
        assert!(!BigInt.fits_in(&Integer));
        assert!(BigInt.fits_in(&Varchar));
        assert_eq!(List(Box::new(Integer)).widen(&List(Box::new(BigInt))), List(Box::new(BigInt)));
        assert_eq!(List(Box::new(Integer)).widen(&Integer), Varchar);
    }
}
