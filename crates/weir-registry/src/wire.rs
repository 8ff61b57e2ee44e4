//! Confluent's wire format: a message's key or value is a zero byte, the schema's id as a
//! big-endian 32-bit integer, for Protobuf the message's indexes (zig-zag varints, a count
//! then the path; the first message alone as a single 0), then the payload.

/// Why bytes are not in the wire format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{0} bytes: too short for the wire format's 5-byte header")]
    TooShort(usize),
    #[error("magic byte {0:#04x}, not 0: not in Confluent's wire format")]
    Magic(u8),
    #[error("the Protobuf message indexes do not end")]
    Indexes,
}

/// The header for schema `id`, with `indexes` for Protobuf.
pub fn header(id: u32, indexes: Option<&[i32]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    if let Some(indexes) = indexes {
        if indexes == [0] {
            out.push(0);
        } else {
            varint(&mut out, indexes.len() as i64);
            for i in indexes {
                varint(&mut out, *i as i64);
            }
        }
    }
    out
}

/// Splits `bytes` into the schema id and what follows it.
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if bytes.len() < 5 {
        return Err(WireError::TooShort(bytes.len()));
    }
    if bytes[0] != 0 {
        return Err(WireError::Magic(bytes[0]));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[5..]))
}

/// Splits what follows a Protobuf header into the message indexes and the payload.
pub fn split_indexes(bytes: &[u8]) -> Result<(Vec<i32>, &[u8]), WireError> {
    let (count, mut rest) = read_varint(bytes)?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    let mut indexes = Vec::with_capacity(count.clamp(0, 64) as usize);
    for _ in 0..count {
        let (i, r) = read_varint(rest)?;
        indexes.push(i as i32);
        rest = r;
    }
    Ok((indexes, rest))
}

fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn read_varint(bytes: &[u8]) -> Result<(i64, &[u8]), WireError> {
    let mut z: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(10) {
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((((z >> 1) as i64) ^ -((z & 1) as i64), &bytes[i + 1..]));
        }
    }
    Err(WireError::Indexes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_bytes_are_named() {
        let h = header(258, None);
        assert_eq!(h, [0, 0, 0, 1, 2]);
        let mut msg = h.clone();
        msg.extend_from_slice(b"payload");
        assert_eq!(split(&msg).unwrap(), (258, &b"payload"[..]));
        assert_eq!(header(1, Some(&[0])), [0, 0, 0, 0, 1, 0], "the first message is one zero byte");
        let nested = header(7, Some(&[1, 0, 2]));
        assert_eq!(&nested[5..], [6, 2, 0, 4], "count then indexes, zig-zag");
        let (id, rest) = split(&nested).unwrap();
        assert_eq!(id, 7);
        assert_eq!(split_indexes(rest).unwrap(), (vec![1, 0, 2], &[][..]));
        assert_eq!(split(&[0, 1]), Err(WireError::TooShort(2)));
        assert_eq!(split(&[1, 0, 0, 0, 1]), Err(WireError::Magic(1)));
        assert_eq!(split_indexes(&[0x80]), Err(WireError::Indexes));
    }
}
