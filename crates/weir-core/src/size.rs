//! Sizes in bytes as people write and read them: `512MB` in a settings file, `1.5 GiB` in a
//! message.

/// `1GB`, `512 MB`, `64kB` (PostgreSQL's units: powers of 1024) or a number of bytes.
pub fn parse(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = (t[..split].parse::<u64>().ok()?, t[split..].trim().to_ascii_uppercase());
    let shift = match unit.as_str() {
        "" | "B" => 0,
        "KB" | "K" => 10,
        "MB" | "M" => 20,
        "GB" | "G" => 30,
        "TB" | "T" => 40,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// A size as people read it (`1.5 GiB`).
pub fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_postgres_writes_them() {
        assert_eq!(parse("1GB"), Some(1 << 30));
        assert_eq!(parse("64 kB"), Some(64 << 10));
        assert_eq!(parse("1000"), Some(1000));
        assert_eq!(parse("1.5GB"), None);
        assert_eq!(parse("GB"), None);
        assert_eq!(parse("99999999999TB"), None);
    }

    #[test]
    fn sizes_print_in_the_largest_unit_below_them() {
        assert_eq!(human(1536 << 20), "1.5 GiB");
        assert_eq!(human(2048), "2.0 KiB");
        assert_eq!(human(12), "12 B");
    }
}
