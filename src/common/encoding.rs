//! Base64 (RFC 4648, standard alphabet, padded), as the QEMU guest agent and vSphere's `guestinfo.userdata` use
//! it: the `base64` crate, which refuses bad input instead of skipping it.
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Percent-encodes `s` (RFC 3986): ASCII letters and digits and the bytes in `keep` pass, every other byte
/// becomes `%XX`.
pub fn percent_encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decodes standard padded base64; bad input is an error, not skipped.
pub fn unbase64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(s.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_and_roundtrip() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
            assert_eq!(unbase64(o).unwrap(), i.as_bytes());
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(unbase64("Zm9v!").is_err());
        assert!(unbase64("Zm9").is_err());
    }
}
