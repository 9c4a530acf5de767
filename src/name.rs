//! Object-manager names built without allocation: `\Device\StageDrvK` and friends.

use crate::sys::{PWCH, UNICODE_STRING, USHORT};

/// Capacity in UTF-16 units; the longest name is `\DosDevices\StageDrvNN`.
const CAPACITY: usize = 40;

/// A UTF-16 name stored inline, so it can live in a device extension.
pub struct Name {
    units: [u16; CAPACITY],
    len: usize,
}

impl Name {
    /// `prefix` followed by the decimal `index`. `prefix` is ASCII and short.
    pub fn indexed(prefix: &str, index: u32) -> Self {
        let mut name = Self { units: [0; CAPACITY], len: 0 };
        for byte in prefix.bytes() {
            name.push(byte);
        }
        let mut digits = [0u8; 10];
        let mut count = 0;
        let mut rest = index;
        loop {
            // A decimal digit always fits a byte.
            #[allow(clippy::cast_possible_truncation)]
            let digit = (rest % 10) as u8;
            digits[count] = b'0' + digit;
            count += 1;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        for &digit in digits[..count].iter().rev() {
            name.push(digit);
        }
        name
    }

    fn push(&mut self, byte: u8) {
        debug_assert!(byte.is_ascii() && self.len < CAPACITY);
        if self.len < CAPACITY {
            self.units[self.len] = u16::from(byte);
            self.len += 1;
        }
    }

    /// A counted string that borrows this name; valid while `self` is neither moved nor
    /// dropped. The kernel routines it is passed to only read it.
    pub fn as_unicode_string(&self) -> UNICODE_STRING {
        // CAPACITY * 2 is far below u16::MAX.
        #[allow(clippy::cast_possible_truncation)]
        let bytes = (self.len * 2) as USHORT;
        UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: self.units.as_ptr().cast_mut() as PWCH }
    }
}

#[cfg(test)]
mod tests {
    use super::Name;

    fn text(name: &Name) -> alloc_free::Text {
        alloc_free::Text::from(&name.units[..name.len])
    }

    mod alloc_free {
        /// Compares UTF-16 units with an ASCII expectation without needing `alloc`.
        pub struct Text<'a>(&'a [u16]);
        impl<'a> From<&'a [u16]> for Text<'a> {
            fn from(units: &'a [u16]) -> Self {
                Text(units)
            }
        }
        impl PartialEq<&str> for Text<'_> {
            fn eq(&self, other: &&str) -> bool {
                self.0.iter().copied().eq(other.bytes().map(u16::from))
            }
        }
    }

    #[test]
    fn appends_decimal_index() {
        assert!(text(&Name::indexed("\\Device\\StageDrv", 0)) == "\\Device\\StageDrv0");
        assert!(text(&Name::indexed("\\DosDevices\\StageDrv", 17)) == "\\DosDevices\\StageDrv17");
        assert!(text(&Name::indexed("x", 4_000_000_000)) == "x4000000000");
    }

    #[test]
    fn unicode_string_counts_bytes() {
        let name = Name::indexed("ab", 3);
        let us = name.as_unicode_string();
        assert_eq!(us.Length, 6);
        assert_eq!(us.MaximumLength, 6);
    }
}
