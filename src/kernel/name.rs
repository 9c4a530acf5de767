//! Object-manager and registry names built without allocation.

use super::sys::{PWCH, UNICODE_STRING, USHORT};

/// A UTF-16 string stored inline (so it can live in an extension) with room for `N`
/// units. Pushing past the end fails and leaves the string unchanged.
pub struct WideBuf<const N: usize> {
    units: [u16; N],
    len: usize,
}

/// Device, link and value names: `\DosDevices\StageDrvNN` is the longest.
pub type Name = WideBuf<48>;
/// Registry paths (a service key path is well under 260 characters).
pub type RegistryPath = WideBuf<260>;

impl<const N: usize> WideBuf<N> {
    /// The empty string.
    #[must_use]
    pub const fn new() -> Self {
        Self { units: [0; N], len: 0 }
    }

    /// `s`, which must fit; used for names known at compile time.
    #[must_use]
    pub fn from_ascii(s: &str) -> Self {
        let mut name = Self::new();
        let fits = name.push_str(s);
        debug_assert!(fits, "name too long");
        name
    }

    /// `prefix` followed by the decimal `index`.
    #[must_use]
    pub fn indexed(prefix: &str, index: u32) -> Self {
        let mut name = Self::from_ascii(prefix);
        let fits = name.push_decimal(index);
        debug_assert!(fits, "name too long");
        name
    }

    /// Appends ASCII `s`; `false` (and no change) if it does not fit.
    pub fn push_str(&mut self, s: &str) -> bool {
        let Some(end) = self.len.checked_add(s.len()).filter(|&end| end <= N && s.is_ascii()) else {
            return false;
        };
        for (slot, byte) in self.units.iter_mut().skip(self.len).zip(s.bytes()) {
            *slot = u16::from(byte);
        }
        self.len = end;
        true
    }

    /// Appends UTF-16 units; `false` (and no change) if they do not fit.
    pub fn push_units(&mut self, units: &[u16]) -> bool {
        let Some(end) = self.len.checked_add(units.len()).filter(|&end| end <= N) else { return false };
        for (slot, &unit) in self.units.iter_mut().skip(self.len).zip(units) {
            *slot = unit;
        }
        self.len = end;
        true
    }

    /// Appends the decimal digits of `value`.
    pub fn push_decimal(&mut self, value: u32) -> bool {
        // Most significant digit first: divide by falling powers of ten.
        let mut text = [0u8; 10];
        let mut used = 0;
        let mut power: u32 = 1_000_000_000;
        while power > 0 {
            let digit = value.checked_div(power).unwrap_or(0).checked_rem(10).unwrap_or(0);
            if digit != 0 || used > 0 || power == 1 {
                if let Some(slot) = text.get_mut(used) {
                    *slot = b'0'.wrapping_add(digit as u8);
                }
                used = used.wrapping_add(1);
            }
            power = power.checked_div(10).unwrap_or(0);
        }
        // The bytes are ASCII digits.
        self.push_str(text.get(..used).and_then(|t| core::str::from_utf8(t).ok()).unwrap_or("?"))
    }

    /// A counted string that borrows this buffer; valid while `self` is neither moved
    /// nor dropped. The kernel routines it is passed to only read it.
    #[must_use]
    pub fn as_unicode_string(&self) -> UNICODE_STRING {
        // N is far below u16::MAX / 2.
        let bytes = (self.len << 1) as USHORT;
        UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: self.units.as_ptr().cast_mut() as PWCH }
    }

    /// The units, for comparisons in tests and logs.
    #[must_use]
    pub fn units(&self) -> &[u16] {
        self.units.get(..self.len).unwrap_or(&[])
    }
}

impl<const N: usize> Default for WideBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Display for WideBuf<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for c in char::decode_utf16(self.units().iter().copied()) {
            core::fmt::Write::write_char(f, c.unwrap_or(char::REPLACEMENT_CHARACTER))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Name, WideBuf};

    fn same(name: &[u16], ascii: &str) -> bool {
        name.iter().copied().eq(ascii.bytes().map(u16::from))
    }

    #[test]
    fn appends_decimal_index() {
        assert!(same(Name::indexed("\\Device\\StageDrv", 0).units(), "\\Device\\StageDrv0"));
        assert!(same(Name::indexed("\\DosDevices\\StageDrv", 17).units(), "\\DosDevices\\StageDrv17"));
        assert!(same(Name::indexed("x", 4_000_000_000).units(), "x4000000000"));
    }

    #[test]
    fn overflow_leaves_the_string_unchanged() {
        let mut small = WideBuf::<4>::from_ascii("abc");
        assert!(!small.push_str("de"));
        assert!(same(small.units(), "abc"));
        assert!(small.push_str("d"));
        assert!(!small.push_decimal(1));
    }

    #[test]
    fn unicode_string_counts_bytes() {
        let name = Name::indexed("ab", 3);
        let us = name.as_unicode_string();
        assert_eq!(us.Length, 6);
        let mut copy = Name::new();
        assert!(copy.push_units(name.units()));
        assert!(same(copy.units(), "ab3"));
        assert!(!WideBuf::<2>::new().push_units(name.units()), "too long: refused");
    }
}
